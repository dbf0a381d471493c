// UDP receive loop on a background thread, feeding a VmcDecoder; no UnityEngine (tested with Mono).

using System;
using System.Net;
using System.Net.Sockets;
using System.Threading;

namespace AvatarLink
{
    /// <summary>Receives datagrams on a background thread and feeds them to a decoder.</summary>
    public sealed class VmcUdpListener : IDisposable
    {
        /// <summary>How long a blocking receive waits before checking for Stop (milliseconds).</summary>
        public const int PollMilliseconds = 100;

        readonly VmcDecoder decoder;
        readonly Socket socket;
        readonly Thread thread;
        volatile bool running;
        long received;
        long rateCount;
        DateTime rateStart = DateTime.UtcNow;
        volatile float packetsPerSecond;
        volatile string lastSocketError = "";

        /// <summary>Bind address:port now (so errors surface at once); call Start to receive.</summary>
        /// <param name="address">"127.0.0.1" (this machine only) or "0.0.0.0" (the LAN too).</param>
        /// <param name="port">UDP port; 0 picks a free one (see Port).</param>
        public VmcUdpListener(VmcDecoder decoder, string address, int port)
        {
            this.decoder = decoder;
            socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            try
            {
                socket.Bind(new IPEndPoint(IPAddress.Parse(address), port));
                socket.ReceiveTimeout = PollMilliseconds;
                socket.ReceiveBufferSize = 1 << 20;
            }
            catch
            {
                socket.Close();
                throw;
            }
            Port = ((IPEndPoint)socket.LocalEndPoint).Port;
            thread = new Thread(Run) { IsBackground = true, Name = "AvatarLink VMC receiver" };
        }

        /// <summary>The bound UDP port.</summary>
        public int Port { get; private set; }

        /// <summary>Datagrams received so far.</summary>
        public long Received { get { return Interlocked.Read(ref received); } }

        /// <summary>Datagrams per second over the last second or so.</summary>
        public float PacketsPerSecond { get { return packetsPerSecond; } }

        /// <summary>The latest socket error (empty when none).</summary>
        public string LastSocketError { get { return lastSocketError; } }

        public void Start()
        {
            running = true;
            thread.Start();
        }

        /// <summary>Stop the thread (within PollMilliseconds) and close the socket.</summary>
        public void Stop()
        {
            running = false;
            if (thread.IsAlive) thread.Join(PollMilliseconds * 5);
            socket.Close();
        }

        public void Dispose()
        {
            Stop();
        }

        void Run()
        {
            var buffer = new byte[65536];
            while (running)
            {
                int length;
                try
                {
                    length = socket.Receive(buffer);
                }
                catch (SocketException e)
                {
                    // Timeouts let the loop see Stop; Windows reports ICMP "port unreachable" from
                    // earlier sends as ConnectionReset: neither is fatal.
                    if (e.SocketErrorCode != SocketError.TimedOut && e.SocketErrorCode != SocketError.WouldBlock)
                        lastSocketError = e.SocketErrorCode.ToString();
                    UpdateRate();
                    continue;
                }
                catch (ObjectDisposedException)
                {
                    break;
                }
                decoder.Feed(buffer, length);
                Interlocked.Increment(ref received);
                rateCount++;
                UpdateRate();
            }
        }

        void UpdateRate()
        {
            var now = DateTime.UtcNow;
            double seconds = (now - rateStart).TotalSeconds;
            if (seconds >= 1.0)
            {
                packetsPerSecond = (float)(rateCount / seconds);
                rateCount = 0;
                rateStart = now;
            }
        }
    }
}
