// VMC protocol decoding into "latest value per bone", without UnityEngine (tested with Mono).
//
// Feed() runs on the receive thread; CopyTo() hands a consistent copy to the main thread. Both
// take one lock for a few microseconds; nothing allocates per datagram.
//
// Messages understood (VMC protocol):
//   /VMC/Ext/Bone/Pos  s name, f px py pz, f qx qy qz qw     one humanoid bone, local, Unity space
//   /VMC/Ext/Root/Pos  s name, f px py pz, f qx qy qz qw [, f scale xyz, f offset xyz]
//   /VMC/Ext/OK        i loaded [, i calibState, i calibMode [, i trackingStatus]]
//   /VMC/Ext/T         f time (seconds)
// Others (blendshapes, cameras, trackers) are counted as "other" and ignored. A known address with
// the wrong type tags, an unknown bone name or a non-finite number counts as invalid.

using System;

namespace AvatarLink
{
    /// <summary>Counters and latest values of a VMC stream (a plain copy, safe to keep).</summary>
    public sealed class VmcStatus
    {
        public long Packets;
        public long Messages;
        public long BoneMessages;
        public long Frames;
        public long Malformed;
        public long Invalid;
        public long Other;
        public int[] Ok = new int[4];
        public int OkCount;
        public float Time;
        public string LastError = "";

        public void CopyFrom(VmcStatus s)
        {
            Packets = s.Packets; Messages = s.Messages; BoneMessages = s.BoneMessages;
            Frames = s.Frames; Malformed = s.Malformed; Invalid = s.Invalid; Other = s.Other;
            Array.Copy(s.Ok, Ok, 4); OkCount = s.OkCount; Time = s.Time; LastError = s.LastError;
        }
    }

    /// <summary>Thread-safe VMC state: feed datagrams on any thread, copy poses on another.</summary>
    public sealed class VmcDecoder : IOscMessageHandler
    {
        static readonly byte[] BonePos = Ascii("/VMC/Ext/Bone/Pos");
        static readonly byte[] RootPos = Ascii("/VMC/Ext/Root/Pos");
        static readonly byte[] OkAddress = Ascii("/VMC/Ext/OK");
        static readonly byte[] TimeAddress = Ascii("/VMC/Ext/T");
        static readonly byte[] PoseTags = Ascii("sfffffff");
        static readonly byte[] RootTagsV21 = Ascii("sfffffffffffff");
        static readonly byte[] TimeTags = Ascii("f");

        readonly object sync = new object();
        readonly BonePose[] bones = new BonePose[HumanoidBones.Count];
        BonePose root;
        readonly VmcStatus status = new VmcStatus();

        /// <summary>Decode one datagram (any thread). Malformed input is counted, never thrown.</summary>
        public void Feed(byte[] data, int length)
        {
            lock (sync)
            {
                status.Packets++;
                try
                {
                    OscReader.Parse(data, length, this);
                }
                catch (OscFormatException e)
                {
                    status.Malformed++;
                    status.LastError = "malformed datagram: " + e.Message;
                }
            }
        }

        /// <summary>Copy the latest poses (Unity space) and counters (any thread).</summary>
        /// <param name="destination">55 entries, indexed by HumanBodyBones value.</param>
        public void CopyTo(BonePose[] destination, out BonePose rootPose, VmcStatus statusCopy)
        {
            lock (sync)
            {
                Array.Copy(bones, destination, HumanoidBones.Count);
                rootPose = root;
                if (statusCopy != null) statusCopy.CopyFrom(status);
            }
        }

        /// <summary>Forget every received value (bones go back to "not received").</summary>
        public void Clear()
        {
            lock (sync)
            {
                Array.Clear(bones, 0, bones.Length);
                root = new BonePose();
            }
        }

        void IOscMessageHandler.OnMessage(OscMessageView m)
        {
            status.Messages++;
            if (m.AddressIs(BonePos))
            {
                if (!m.TagsAre(PoseTags)) { Invalid(m, "expected ,sfffffff"); return; }
                int nameLength;
                int floats = OscReader.SkipString(m.Data, m.ArgsStart, m.End, out nameLength);
                int index = HumanoidBones.IndexOf(m.Data, m.ArgsStart, nameLength);
                if (index < 0) { Invalid(m, "unknown bone name"); return; }
                BonePose pose;
                if (!ReadPose(m.Data, floats, out pose)) { Invalid(m, "non-finite value"); return; }
                bones[index] = pose;
                status.BoneMessages++;
            }
            else if (m.AddressIs(RootPos))
            {
                if (!m.TagsAre(PoseTags) && !m.TagsAre(RootTagsV21)) { Invalid(m, "expected ,sfffffff"); return; }
                int nameLength;
                int floats = OscReader.SkipString(m.Data, m.ArgsStart, m.End, out nameLength);
                BonePose pose;
                if (!ReadPose(m.Data, floats, out pose)) { Invalid(m, "non-finite value"); return; }
                root = pose;
                status.Frames++;
            }
            else if (m.AddressIs(OkAddress))
            {
                if (m.TagCount != 1 && m.TagCount != 3 && m.TagCount != 4) { Invalid(m, "expected 1, 3 or 4 ints"); return; }
                for (int i = 0; i < m.TagCount; i++)
                    if (m.Data[m.TagsStart + i] != (byte)'i') { Invalid(m, "expected ints"); return; }
                for (int i = 0; i < m.TagCount; i++) status.Ok[i] = OscReader.ReadInt(m.Data, m.ArgsStart + 4 * i);
                status.OkCount = m.TagCount;
            }
            else if (m.AddressIs(TimeAddress))
            {
                if (!m.TagsAre(TimeTags)) { Invalid(m, "expected ,f"); return; }
                status.Time = OscReader.ReadFloat(m.Data, m.ArgsStart);
            }
            else
            {
                status.Other++;
            }
        }

        static bool ReadPose(byte[] data, int offset, out BonePose pose)
        {
            pose = new BonePose();
            pose.Px = OscReader.ReadFloat(data, offset);
            pose.Py = OscReader.ReadFloat(data, offset + 4);
            pose.Pz = OscReader.ReadFloat(data, offset + 8);
            var q = new Quat(OscReader.ReadFloat(data, offset + 12), OscReader.ReadFloat(data, offset + 16),
                             OscReader.ReadFloat(data, offset + 20), OscReader.ReadFloat(data, offset + 24));
            if (!Finite(pose.Px) || !Finite(pose.Py) || !Finite(pose.Pz) || !Finite(q.X) || !Finite(q.Y)
                || !Finite(q.Z) || !Finite(q.W))
                return false;
            pose.Rotation = q.Normalized();
            pose.Valid = true;
            return true;
        }

        static bool Finite(float v)
        {
            return !float.IsNaN(v) && !float.IsInfinity(v);
        }

        void Invalid(OscMessageView m, string why)
        {
            status.Invalid++;
            status.LastError = m.Address + " ," + m.TypeTags + ": " + why;
        }

        static byte[] Ascii(string s)
        {
            return System.Text.Encoding.ASCII.GetBytes(s);
        }
    }
}
