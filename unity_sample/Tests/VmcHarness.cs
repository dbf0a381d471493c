// Test harness for the plain C# part of the Unity sample; compiled with Mono by
// tests/test_unity_sample.py together with Assets/AvatarLink/Runtime/{OscReader,HumanoidPose,
// VmcDecoder,VmcUdpListener}.cs (not part of the Unity package: it sits outside Assets/).
//
//   mono harness.exe decode FILE...       feed each file as one datagram, then print the state
//   mono harness.exe listen PACKETS MS    receive on 127.0.0.1 (free port, printed as "READY port")
//                                         until PACKETS datagrams or MS milliseconds, print the state
//
// State lines (floats in round-trip "R" format):
//   bone NAME INDEX px py pz qx qy qz qw
//   delta NAME qx qy qz qw          accumulated rotation (HumanoidBones.WorldDeltas)
//   root px py pz qx qy qz qw
//   ok N a b c d
//   time t
//   stats packets messages bones frames malformed invalid other
//   error TEXT

using System;
using System.Globalization;
using System.IO;
using System.Threading;
using AvatarLink;

public static class VmcHarness
{
    public static int Main(string[] args)
    {
        var decoder = new VmcDecoder();
        if (args.Length >= 1 && args[0] == "decode")
        {
            for (int i = 1; i < args.Length; i++)
            {
                byte[] data = File.ReadAllBytes(args[i]);
                decoder.Feed(data, data.Length);
            }
        }
        else if (args.Length == 3 && args[0] == "listen")
        {
            int packets = int.Parse(args[1], CultureInfo.InvariantCulture);
            int ms = int.Parse(args[2], CultureInfo.InvariantCulture);
            using (var listener = new VmcUdpListener(decoder, "127.0.0.1", 0))
            {
                listener.Start();
                Console.WriteLine("READY " + listener.Port);
                Console.Out.Flush();
                var deadline = DateTime.UtcNow.AddMilliseconds(ms);
                while (listener.Received < packets && DateTime.UtcNow < deadline) Thread.Sleep(2);
            }
        }
        else
        {
            Console.Error.WriteLine("usage: decode FILE... | listen PACKETS MS");
            return 2;
        }
        Print(decoder);
        return 0;
    }

    static string F(float v)
    {
        return v.ToString("R", CultureInfo.InvariantCulture);
    }

    static void Print(VmcDecoder decoder)
    {
        var poses = new BonePose[HumanoidBones.Count];
        var deltas = new Quat[HumanoidBones.Count];
        var status = new VmcStatus();
        BonePose root;
        decoder.CopyTo(poses, out root, status);
        HumanoidBones.WorldDeltas(poses, deltas);
        for (int i = 0; i < HumanoidBones.Count; i++)
        {
            string name = HumanoidBones.Names[i];
            if (poses[i].Valid)
            {
                var p = poses[i];
                Console.WriteLine(string.Join(" ", new[] {
                    "bone", name, i.ToString(CultureInfo.InvariantCulture), F(p.Px), F(p.Py), F(p.Pz),
                    F(p.Rotation.X), F(p.Rotation.Y), F(p.Rotation.Z), F(p.Rotation.W) }));
            }
            var d = deltas[i];
            Console.WriteLine(string.Join(" ", new[] { "delta", name, F(d.X), F(d.Y), F(d.Z), F(d.W) }));
        }
        if (root.Valid)
            Console.WriteLine(string.Join(" ", new[] { "root", F(root.Px), F(root.Py), F(root.Pz),
                F(root.Rotation.X), F(root.Rotation.Y), F(root.Rotation.Z), F(root.Rotation.W) }));
        Console.WriteLine("ok " + status.OkCount + " " + string.Join(" ", Array.ConvertAll(status.Ok, x => x.ToString(CultureInfo.InvariantCulture))));
        Console.WriteLine("time " + F(status.Time));
        Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "stats {0} {1} {2} {3} {4} {5} {6}",
            status.Packets, status.Messages, status.BoneMessages, status.Frames, status.Malformed,
            status.Invalid, status.Other));
        Console.WriteLine("error " + status.LastError);
    }
}
