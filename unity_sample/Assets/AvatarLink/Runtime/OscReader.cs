// OSC 1.0 parsing without allocations and without UnityEngine (compiles and is tested with Mono).
//
// Wire format: an OSC-string is ASCII, NUL-terminated, zero-padded to a multiple of 4 bytes; 'i' is a
// big-endian int32, 'f' a big-endian float32; a message is address, type tags (",sfff..."), then the
// arguments; a bundle is "#bundle\0", an 8-byte time tag, then elements each prefixed by an int32
// size. Every length is checked before it is read: a truncated or malformed datagram throws
// OscFormatException and never reads outside the buffer.

using System;
using System.Runtime.InteropServices;

namespace AvatarLink
{
    /// <summary>A datagram that is not valid OSC 1.0.</summary>
    public sealed class OscFormatException : Exception
    {
        public OscFormatException(string message) : base(message) { }
    }

    /// <summary>Receives each message of a datagram (bundles are flattened, in order).</summary>
    public interface IOscMessageHandler
    {
        void OnMessage(OscMessageView message);
    }

    /// <summary>A message inside a datagram buffer; valid only during the OnMessage call.</summary>
    public struct OscMessageView
    {
        public readonly byte[] Data;
        public readonly int AddressStart;
        public readonly int AddressLength;
        /// <summary>Offset of the first type letter (after the comma).</summary>
        public readonly int TagsStart;
        public readonly int TagCount;
        /// <summary>Offset of the first argument.</summary>
        public readonly int ArgsStart;
        public readonly int End;

        public OscMessageView(byte[] data, int addressStart, int addressLength, int tagsStart,
                              int tagCount, int argsStart, int end)
        {
            Data = data;
            AddressStart = addressStart;
            AddressLength = addressLength;
            TagsStart = tagsStart;
            TagCount = tagCount;
            ArgsStart = argsStart;
            End = end;
        }

        /// <summary>Whether the address equals the given ASCII bytes (no allocation).</summary>
        public bool AddressIs(byte[] ascii)
        {
            return OscReader.BytesEqual(Data, AddressStart, AddressLength, ascii);
        }

        /// <summary>Whether the type letters (without the comma) equal the given ASCII bytes.</summary>
        public bool TagsAre(byte[] ascii)
        {
            return OscReader.BytesEqual(Data, TagsStart, TagCount, ascii);
        }

        /// <summary>The address as a string (allocates; for diagnostics).</summary>
        public string Address
        {
            get { return System.Text.Encoding.ASCII.GetString(Data, AddressStart, AddressLength); }
        }

        /// <summary>The type letters as a string (allocates; for diagnostics).</summary>
        public string TypeTags
        {
            get { return System.Text.Encoding.ASCII.GetString(Data, TagsStart, TagCount); }
        }
    }

    /// <summary>Parses OSC datagrams and hands each message to a handler.</summary>
    public static class OscReader
    {
        /// <summary>Bundles nested deeper than this are refused (a crafted packet could recurse).</summary>
        public const int MaxDepth = 8;

        static readonly byte[] BundleTag = { (byte)'#', (byte)'b', (byte)'u', (byte)'n', (byte)'d', (byte)'l', (byte)'e', 0 };

        /// <summary>Parse data[0..length) (one UDP datagram).</summary>
        /// <exception cref="OscFormatException">The datagram is not valid OSC.</exception>
        public static void Parse(byte[] data, int length, IOscMessageHandler handler)
        {
            if (data == null || length < 0 || length > data.Length)
                throw new ArgumentException("length outside the buffer");
            ParseElement(data, 0, length, handler, 0);
        }

        static void ParseElement(byte[] data, int start, int end, IOscMessageHandler handler, int depth)
        {
            int size = end - start;
            if (size <= 0) throw new OscFormatException("empty OSC element at byte " + start);
            if (size % 4 != 0) throw new OscFormatException("OSC element size " + size + " is not a multiple of 4");
            if (size >= 8 && BytesEqual(data, start, 8, BundleTag))
            {
                if (depth >= MaxDepth) throw new OscFormatException("bundles nested too deep");
                if (size < 16) throw new OscFormatException("truncated bundle header");
                int pos = start + 16;
                while (pos < end)
                {
                    if (end - pos < 4) throw new OscFormatException("truncated bundle element size");
                    int elementSize = ReadInt(data, pos);
                    pos += 4;
                    if (elementSize <= 0 || elementSize % 4 != 0 || elementSize > end - pos)
                        throw new OscFormatException("bad bundle element size " + elementSize);
                    ParseElement(data, pos, pos + elementSize, handler, depth + 1);
                    pos += elementSize;
                }
                return;
            }
            handler.OnMessage(ParseMessage(data, start, end));
        }

        static OscMessageView ParseMessage(byte[] data, int start, int end)
        {
            if (data[start] != (byte)'/') throw new OscFormatException("address does not start with '/'");
            int addressLength;
            int pos = SkipString(data, start, end, out addressLength);
            if (pos >= end || data[pos] != (byte)',') throw new OscFormatException("missing type tag string");
            int tagLength;
            int argsStart = SkipString(data, pos, end, out tagLength);
            int tagsStart = pos + 1;
            int tagCount = tagLength - 1;
            int argPos = argsStart;
            for (int i = 0; i < tagCount; i++)
            {
                byte tag = data[tagsStart + i];
                switch ((char)tag)
                {
                    case 'i':
                    case 'f':
                    case 'c':
                    case 'r':
                    case 'm':
                        argPos = Need(argPos, 4, end);
                        break;
                    case 'h':
                    case 'd':
                    case 't':
                        argPos = Need(argPos, 8, end);
                        break;
                    case 's':
                    case 'S':
                        int ignored;
                        argPos = SkipString(data, argPos, end, out ignored);
                        break;
                    case 'b':
                        Need(argPos, 4, end);
                        int blob = ReadInt(data, argPos);
                        if (blob < 0) throw new OscFormatException("negative blob size");
                        argPos = Need(argPos, 4 + ((blob + 3) & ~3), end);
                        break;
                    case 'T':
                    case 'F':
                    case 'N':
                    case 'I':
                        break;
                    default:
                        throw new OscFormatException("unknown type tag '" + (char)tag + "'");
                }
            }
            if (argPos != end) throw new OscFormatException("bytes left after the arguments");
            return new OscMessageView(data, start, addressLength, tagsStart, tagCount, argsStart, end);
        }

        static int Need(int pos, int count, int end)
        {
            if (count > end - pos) throw new OscFormatException("truncated argument");
            return pos + count;
        }

        /// <summary>Checks the OSC-string at start; returns the offset after its padding.</summary>
        public static int SkipString(byte[] data, int start, int end, out int length)
        {
            int nul = start;
            while (nul < end && data[nul] != 0) nul++;
            if (nul >= end) throw new OscFormatException("string is not NUL-terminated");
            length = nul - start;
            int next = start + (length / 4 + 1) * 4;
            if (next > end) throw new OscFormatException("string padding truncated");
            for (int i = nul; i < next; i++)
                if (data[i] != 0) throw new OscFormatException("non-zero string padding");
            for (int i = start; i < nul; i++)
                if (data[i] > 127) throw new OscFormatException("string is not ASCII");
            return next;
        }

        /// <summary>Big-endian int32 at offset.</summary>
        public static int ReadInt(byte[] data, int offset)
        {
            return (data[offset] << 24) | (data[offset + 1] << 16) | (data[offset + 2] << 8) | data[offset + 3];
        }

        /// <summary>Big-endian float32 at offset.</summary>
        public static float ReadFloat(byte[] data, int offset)
        {
            IntFloat bits = new IntFloat();
            bits.Int = ReadInt(data, offset);
            return bits.Float;
        }

        [StructLayout(LayoutKind.Explicit)]
        struct IntFloat
        {
            [FieldOffset(0)] public int Int;
            [FieldOffset(0)] public float Float;
        }

        /// <summary>Whether data[start..start+length) equals expected.</summary>
        public static bool BytesEqual(byte[] data, int start, int length, byte[] expected)
        {
            if (length != expected.Length) return false;
            for (int i = 0; i < length; i++)
                if (data[start + i] != expected[i]) return false;
            return true;
        }
    }
}
