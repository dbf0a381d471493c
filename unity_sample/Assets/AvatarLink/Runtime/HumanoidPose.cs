// Humanoid bone names, hierarchy and pose maths without UnityEngine (compiles and is tested with Mono).
//
// Bone indices are UnityEngine.HumanBodyBones values (Hips = 0 ... UpperChest = 54), so the Unity side
// casts an index straight to HumanBodyBones.

using System;

namespace AvatarLink
{
    /// <summary>A rotation quaternion (x, y, z, w) with the same algebra as UnityEngine.Quaternion.</summary>
    public struct Quat
    {
        public float X, Y, Z, W;

        public Quat(float x, float y, float z, float w)
        {
            X = x; Y = y; Z = z; W = w;
        }

        public static readonly Quat Identity = new Quat(0f, 0f, 0f, 1f);

        /// <summary>a * b: b applied first, then a (as Unity's operator *).</summary>
        public static Quat Multiply(Quat a, Quat b)
        {
            return new Quat(
                a.W * b.X + a.X * b.W + a.Y * b.Z - a.Z * b.Y,
                a.W * b.Y - a.X * b.Z + a.Y * b.W + a.Z * b.X,
                a.W * b.Z + a.X * b.Y - a.Y * b.X + a.Z * b.W,
                a.W * b.W - a.X * b.X - a.Y * b.Y - a.Z * b.Z);
        }

        /// <summary>Rotates the vector (x, y, z) (as Unity's Quaternion * Vector3).</summary>
        public void Rotate(float x, float y, float z, out float rx, out float ry, out float rz)
        {
            // v' = v + 2w (u x v) + 2 u x (u x v), u = (X, Y, Z)
            float tx = 2f * (Y * z - Z * y);
            float ty = 2f * (Z * x - X * z);
            float tz = 2f * (X * y - Y * x);
            rx = x + W * tx + (Y * tz - Z * ty);
            ry = y + W * ty + (Z * tx - X * tz);
            rz = z + W * tz + (X * ty - Y * tx);
        }

        /// <summary>Unit-length copy (identity for a zero or non-finite quaternion).</summary>
        public Quat Normalized()
        {
            float n = (float)Math.Sqrt(X * X + Y * Y + Z * Z + W * W);
            if (!(n > 1e-6f) || float.IsInfinity(n)) return Identity;
            return new Quat(X / n, Y / n, Z / n, W / n);
        }
    }

    /// <summary>The latest value of one bone: local position (metres) and rotation, Unity space.</summary>
    public struct BonePose
    {
        public float Px, Py, Pz;
        public Quat Rotation;
        /// <summary>Whether a value has been received for this bone.</summary>
        public bool Valid;
    }

    /// <summary>HumanBodyBones names in enum order, their parents, and lookups without allocation.</summary>
    public static class HumanoidBones
    {
        public const int Count = 55;

        public static readonly string[] Names =
        {
            "Hips", "LeftUpperLeg", "RightUpperLeg", "LeftLowerLeg", "RightLowerLeg", "LeftFoot",
            "RightFoot", "Spine", "Chest", "Neck", "Head", "LeftShoulder", "RightShoulder",
            "LeftUpperArm", "RightUpperArm", "LeftLowerArm", "RightLowerArm", "LeftHand", "RightHand",
            "LeftToes", "RightToes", "LeftEye", "RightEye", "Jaw",
            "LeftThumbProximal", "LeftThumbIntermediate", "LeftThumbDistal",
            "LeftIndexProximal", "LeftIndexIntermediate", "LeftIndexDistal",
            "LeftMiddleProximal", "LeftMiddleIntermediate", "LeftMiddleDistal",
            "LeftRingProximal", "LeftRingIntermediate", "LeftRingDistal",
            "LeftLittleProximal", "LeftLittleIntermediate", "LeftLittleDistal",
            "RightThumbProximal", "RightThumbIntermediate", "RightThumbDistal",
            "RightIndexProximal", "RightIndexIntermediate", "RightIndexDistal",
            "RightMiddleProximal", "RightMiddleIntermediate", "RightMiddleDistal",
            "RightRingProximal", "RightRingIntermediate", "RightRingDistal",
            "RightLittleProximal", "RightLittleIntermediate", "RightLittleDistal",
            "UpperChest",
        };

        /// <summary>Parent bone index of each bone in Unity's humanoid hierarchy (-1 for Hips).</summary>
        public static readonly int[] Parents = BuildParents();

        /// <summary>Bone indices ordered so that every parent comes before its children.</summary>
        public static readonly int[] ParentFirst = BuildParentFirst();

        static readonly byte[][] AsciiNames = BuildAsciiNames();

        /// <summary>Index of a name (-1 when it is not a HumanBodyBones name).</summary>
        public static int IndexOf(string name)
        {
            return Array.IndexOf(Names, name);
        }

        /// <summary>Index of the ASCII name stored at data[start..start+length), without allocating.</summary>
        public static int IndexOf(byte[] data, int start, int length)
        {
            for (int i = 0; i < Count; i++)
                if (OscReader.BytesEqual(data, start, length, AsciiNames[i])) return i;
            return -1;
        }

        /// <summary>
        /// Accumulated rotation of every bone relative to the T-pose, in the avatar's axes: the
        /// parent's delta times the bone's received local rotation (identity when not received).
        /// VMC rotations are local rotations relative to a T-pose whose bone frames are aligned
        /// with the avatar, so a bone's posed world rotation is root * delta * its T-pose rotation.
        /// </summary>
        public static void WorldDeltas(BonePose[] poses, Quat[] deltas)
        {
            for (int k = 0; k < Count; k++)
            {
                int i = ParentFirst[k];
                Quat local = poses[i].Valid ? poses[i].Rotation : Quat.Identity;
                int p = Parents[i];
                deltas[i] = p < 0 ? local : Quat.Multiply(deltas[p], local);
            }
        }

        static int[] BuildParents()
        {
            var parents = new int[Count];
            for (int i = 0; i < Count; i++) parents[i] = IndexOf(ParentName(Names[i]));
            return parents;
        }

        static string ParentName(string name)
        {
            switch (name)
            {
                case "Hips": return null;
                case "Spine": return "Hips";
                case "Chest": return "Spine";
                case "UpperChest": return "Chest";
                case "Neck": return "UpperChest";
                case "Head": return "Neck";
                case "LeftEye":
                case "RightEye":
                case "Jaw": return "Head";
            }
            string side = name.StartsWith("Left") ? "Left" : "Right";
            string part = name.Substring(side.Length);
            switch (part)
            {
                case "UpperLeg": return "Hips";
                case "LowerLeg": return side + "UpperLeg";
                case "Foot": return side + "LowerLeg";
                case "Toes": return side + "Foot";
                case "Shoulder": return "UpperChest";
                case "UpperArm": return side + "Shoulder";
                case "LowerArm": return side + "UpperArm";
                case "Hand": return side + "LowerArm";
            }
            if (part.EndsWith("Proximal")) return side + "Hand";
            if (part.EndsWith("Intermediate")) return name.Replace("Intermediate", "Proximal");
            if (part.EndsWith("Distal")) return name.Replace("Distal", "Intermediate");
            throw new InvalidOperationException("no parent rule for " + name);
        }

        static int[] BuildParentFirst()
        {
            var depth = new int[Count];
            var order = new int[Count];
            for (int i = 0; i < Count; i++)
            {
                order[i] = i;
                for (int p = Parents[i]; p >= 0; p = Parents[p]) depth[i]++;
            }
            Array.Sort((int[])depth.Clone(), order);
            return order;
        }

        static byte[][] BuildAsciiNames()
        {
            var names = new byte[Count][];
            for (int i = 0; i < Count; i++) names[i] = System.Text.Encoding.ASCII.GetBytes(Names[i]);
            return names;
        }
    }
}
