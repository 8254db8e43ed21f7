using System.Buffers.Binary;
using System.Text;

namespace PromptEngine.Tokenization;

/// <summary>Kind of a SentencePiece vocabulary entry (sentencepiece_model.proto, ModelProto.SentencePiece.Type).</summary>
internal enum SentencePieceType
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>One vocabulary entry; its id is its index in <see cref="SentencePieceModelProto.Pieces"/>.</summary>
internal sealed record SentencePieceEntry(string Piece, float Score, SentencePieceType Type);

/// <summary>The few fields of SentencePiece's <c>ModelProto</c> (tokenizer.model) that a BPE encoder needs,
/// with a hand-written protobuf reader and writer. Field numbers and proto2 defaults are those of
/// sentencepiece_model.proto: ModelProto {pieces = 1, trainer_spec = 2, normalizer_spec = 3};
/// SentencePiece {piece = 1, score = 2, type = 3}; TrainerSpec {model_type = 3, vocab_size = 4,
/// treat_whitespace_as_suffix = 24, byte_fallback = 35, unk_id = 40, bos_id = 41, eos_id = 42,
/// pad_id = 43}; NormalizerSpec {name = 1, precompiled_charsmap = 2, add_dummy_prefix = 3,
/// remove_extra_whitespaces = 4, escape_whitespaces = 5}. Other fields are skipped on read.
/// Microsoft.ML.Tokenizers parses the same file but keeps its ModelProto internal and exposes no
/// scores, which the merge loop needs; hence this reader.</summary>
internal sealed class SentencePieceModelProto
{
    public const int ModelTypeUnigram = 1;
    public const int ModelTypeBpe = 2;

    public List<SentencePieceEntry> Pieces { get; } = new();
    public int ModelType { get; set; } = ModelTypeUnigram;
    public int VocabSizeField { get; set; } = 8000;
    public bool TreatWhitespaceAsSuffix { get; set; }
    public bool ByteFallback { get; set; }
    public int UnkId { get; set; }
    public int BosId { get; set; } = 1;
    public int EosId { get; set; } = 2;
    public int PadId { get; set; } = -1;
    public string NormalizerName { get; set; } = "";
    public int PrecompiledCharsmapLength { get; set; }
    public bool AddDummyPrefix { get; set; } = true;
    public bool RemoveExtraWhitespaces { get; set; } = true;
    public bool EscapeWhitespaces { get; set; } = true;

    #region Writer

    /// <summary>The serialized ModelProto. Every field this class holds is written explicitly, even
    /// where it equals the proto2 default, so that readers with other defaults agree.</summary>
    public byte[] Serialize()
    {
        var model = new ProtoWriter();
        foreach (var p in Pieces)
        {
            var piece = new ProtoWriter();
            piece.String(1, p.Piece);
            piece.Float(2, p.Score);
            piece.Varint(3, (ulong)(int)p.Type);
            model.Message(1, piece);
        }

        var trainer = new ProtoWriter();
        trainer.Varint(3, (ulong)ModelType);
        trainer.Varint(4, (ulong)(long)VocabSizeField);
        trainer.Bool(24, TreatWhitespaceAsSuffix);
        trainer.Bool(35, ByteFallback);
        trainer.Varint(40, (ulong)(long)UnkId);
        trainer.Varint(41, (ulong)(long)BosId);
        trainer.Varint(42, (ulong)(long)EosId);
        trainer.Varint(43, (ulong)(long)PadId); // int32 -1 is a ten-byte varint, as protobuf writes it
        model.Message(2, trainer);

        var normalizer = new ProtoWriter();
        normalizer.String(1, NormalizerName);
        normalizer.Bool(3, AddDummyPrefix);
        normalizer.Bool(4, RemoveExtraWhitespaces);
        normalizer.Bool(5, EscapeWhitespaces);
        model.Message(3, normalizer);
        return model.ToArray();
    }

    sealed class ProtoWriter
    {
        readonly MemoryStream buffer = new();

        void Tag(int field, int wireType) => RawVarint(((ulong)field << 3) | (uint)wireType);

        void RawVarint(ulong value)
        {
            while (value >= 0x80)
            {
                buffer.WriteByte((byte)(value | 0x80));
                value >>= 7;
            }
            buffer.WriteByte((byte)value);
        }

        public void Varint(int field, ulong value) { Tag(field, 0); RawVarint(value); }

        public void Bool(int field, bool value) => Varint(field, value ? 1UL : 0UL);

        public void Float(int field, float value)
        {
            Tag(field, 5);
            Span<byte> bytes = stackalloc byte[4];
            BinaryPrimitives.WriteSingleLittleEndian(bytes, value);
            buffer.Write(bytes);
        }

        public void Bytes(int field, ReadOnlySpan<byte> value)
        {
            Tag(field, 2);
            RawVarint((ulong)value.Length);
            buffer.Write(value);
        }

        public void String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

        public void Message(int field, ProtoWriter message) => Bytes(field, message.buffer.GetBuffer().AsSpan(0, (int)message.buffer.Length));

        public byte[] ToArray() => buffer.ToArray();
    }

    #endregion

    #region Reader

    /// <summary>Parses a serialized ModelProto; <paramref name="sourceName"/> names the file in errors.</summary>
    public static SentencePieceModelProto Parse(ReadOnlySpan<byte> bytes, string sourceName)
    {
        var model = new SentencePieceModelProto();
        var reader = new ProtoReader(bytes, 0, sourceName, "ModelProto");
        while (reader.Next(out int field, out int wireType))
        {
            switch (field, wireType)
            {
                case (1, 2): model.Pieces.Add(ParsePiece(reader.Submessage("pieces"), model.Pieces.Count, sourceName)); break;
                case (2, 2): ParseTrainerSpec(reader.Submessage("trainer_spec"), model); break;
                case (3, 2): ParseNormalizerSpec(reader.Submessage("normalizer_spec"), model); break;
                default: reader.Skip(wireType); break;
            }
        }
        return model;
    }

    static SentencePieceEntry ParsePiece(ProtoReader reader, int index, string sourceName)
    {
        string? piece = null;
        float score = 0;
        var type = SentencePieceType.Normal;
        while (reader.Next(out int field, out int wireType))
        {
            switch (field, wireType)
            {
                case (1, 2): piece = reader.Utf8String($"pieces[{index}].piece"); break;
                case (2, 5): score = reader.Float(); break;
                case (3, 0):
                    long t = (long)reader.Varint();
                    if (t is < 1 or > 6) throw new TokenizerException($"{sourceName}: pieces[{index}].type is {t}, not a SentencePiece type (1..6)");
                    type = (SentencePieceType)t;
                    break;
                default: reader.Skip(wireType); break;
            }
        }
        if (string.IsNullOrEmpty(piece)) throw new TokenizerException($"{sourceName}: pieces[{index}] has no piece text");
        return new SentencePieceEntry(piece, score, type);
    }

    static void ParseTrainerSpec(ProtoReader reader, SentencePieceModelProto model)
    {
        while (reader.Next(out int field, out int wireType))
        {
            switch (field, wireType)
            {
                case (3, 0): model.ModelType = (int)reader.Varint(); break;
                case (4, 0): model.VocabSizeField = (int)reader.Varint(); break;
                case (24, 0): model.TreatWhitespaceAsSuffix = reader.Varint() != 0; break;
                case (35, 0): model.ByteFallback = reader.Varint() != 0; break;
                case (40, 0): model.UnkId = (int)reader.Varint(); break;
                case (41, 0): model.BosId = (int)reader.Varint(); break;
                case (42, 0): model.EosId = (int)reader.Varint(); break;
                case (43, 0): model.PadId = (int)reader.Varint(); break;
                default: reader.Skip(wireType); break;
            }
        }
    }

    static void ParseNormalizerSpec(ProtoReader reader, SentencePieceModelProto model)
    {
        while (reader.Next(out int field, out int wireType))
        {
            switch (field, wireType)
            {
                case (1, 2): model.NormalizerName = reader.Utf8String("normalizer_spec.name"); break;
                case (2, 2): model.PrecompiledCharsmapLength = reader.Submessage("normalizer_spec.precompiled_charsmap").Length; break;
                case (3, 0): model.AddDummyPrefix = reader.Varint() != 0; break;
                case (4, 0): model.RemoveExtraWhitespaces = reader.Varint() != 0; break;
                case (5, 0): model.EscapeWhitespaces = reader.Varint() != 0; break;
                default: reader.Skip(wireType); break;
            }
        }
    }

    /// <summary>A cursor over one message's bytes; every overrun names the file, message and byte offset.</summary>
    ref struct ProtoReader
    {
        readonly ReadOnlySpan<byte> bytes;
        readonly int baseOffset;
        readonly string sourceName;
        readonly string messageName;
        int position;

        public ProtoReader(ReadOnlySpan<byte> bytes, int baseOffset, string sourceName, string messageName)
        {
            this.bytes = bytes;
            this.baseOffset = baseOffset;
            this.sourceName = sourceName;
            this.messageName = messageName;
            position = 0;
        }

        public readonly int Length => bytes.Length;

        readonly TokenizerException Error(string what) =>
            new($"{sourceName}: malformed protobuf in {messageName} at byte {baseOffset + position}: {what}");

        public bool Next(out int field, out int wireType)
        {
            field = wireType = 0;
            if (position >= bytes.Length) return false;
            ulong tag = Varint();
            field = (int)(tag >> 3);
            wireType = (int)(tag & 7);
            if (field == 0) throw Error("field number 0");
            return true;
        }

        public ulong Varint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 70; shift += 7)
            {
                if (position >= bytes.Length) throw Error("truncated varint");
                byte b = bytes[position++];
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return value;
            }
            throw Error("varint longer than 10 bytes");
        }

        public float Float()
        {
            if (position + 4 > bytes.Length) throw Error("truncated float");
            float value = BinaryPrimitives.ReadSingleLittleEndian(bytes.Slice(position, 4));
            position += 4;
            return value;
        }

        ReadOnlySpan<byte> LengthDelimited()
        {
            ulong length = Varint();
            if (length > (ulong)(bytes.Length - position)) throw Error($"length {length} runs past the end of the message");
            var slice = bytes.Slice(position, (int)length);
            position += (int)length;
            return slice;
        }

        public ProtoReader Submessage(string name)
        {
            int start = baseOffset + position;
            var slice = LengthDelimited();
            return new ProtoReader(slice, start, sourceName, name);
        }

        public string Utf8String(string name)
        {
            var slice = LengthDelimited();
            try { return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(slice); }
            catch (DecoderFallbackException e) { throw new TokenizerException($"{sourceName}: {name} is not valid UTF-8", e); }
        }

        public void Skip(int wireType)
        {
            switch (wireType)
            {
                case 0: Varint(); break;
                case 1: if (position + 8 > bytes.Length) throw Error("truncated fixed64"); position += 8; break;
                case 2: LengthDelimited(); break;
                case 5: if (position + 4 > bytes.Length) throw Error("truncated fixed32"); position += 4; break;
                default: throw Error($"unsupported wire type {wireType}");
            }
        }
    }

    #endregion
}
