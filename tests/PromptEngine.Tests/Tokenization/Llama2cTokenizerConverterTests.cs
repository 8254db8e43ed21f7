using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using PromptEngine.Tokenization;

namespace PromptEngine.Tests.Tokenization;

public class Llama2cTokenizerConverterTests
{
    [Test]
    public void TokenizerModelReloadsWithTheLibrary()
    {
        using var stream = File.OpenRead(Path.Combine(StoriesTokenizer.Folder, "tokenizer.model"));
        var library = Microsoft.ML.Tokenizers.LlamaTokenizer.Create(stream);
        Assert.Multiple(() =>
        {
            Assert.That(library.Vocabulary.Count, Is.EqualTo(32000));
            Assert.That(library.BeginningOfSentenceId, Is.EqualTo(1));
            Assert.That(library.EndOfSentenceId, Is.EqualTo(2));
            Assert.That(library.UnknownId, Is.EqualTo(0));
            Assert.That(library.ByteFallback, Is.True);
            Assert.That(library.AddDummyPrefix, Is.True);
            Assert.That(library.EscapeWhiteSpaces, Is.True);
            Assert.That(library.Vocabulary["<0x0A>"], Is.EqualTo(13));
            Assert.That(library.Vocabulary["▁Once"], Is.EqualTo(9038));
            Assert.That(library.EncodeToIds("Once upon a time"), Is.EqualTo(new[] { 1, 9038, 2501, 263, 931 }));
        });
    }

    [Test]
    public void ProtoRoundTripsThroughOurReader()
    {
        var fromBin = Llama2cTokenizerConverter.ReadTokenizerBin(TestAssets.Llama2cTokenizerBin);
        var reread = SentencePieceModelProto.Parse(File.ReadAllBytes(Path.Combine(StoriesTokenizer.Folder, "tokenizer.model")), "tokenizer.model");
        Assert.That(reread.Pieces, Is.EqualTo(fromBin.Pieces));
        Assert.Multiple(() =>
        {
            Assert.That(reread.ModelType, Is.EqualTo(SentencePieceModelProto.ModelTypeBpe));
            Assert.That(reread.VocabSizeField, Is.EqualTo(32000));
            Assert.That(reread.ByteFallback, Is.True);
            Assert.That((reread.UnkId, reread.BosId, reread.EosId, reread.PadId), Is.EqualTo((0, 1, 2, -1)));
            Assert.That(reread.NormalizerName, Is.EqualTo("identity"));
            Assert.That(reread.AddDummyPrefix, Is.True);
            Assert.That(reread.RemoveExtraWhitespaces, Is.False);
            Assert.That(reread.EscapeWhitespaces, Is.True);
        });
        Assert.That(fromBin.Pieces[0], Is.EqualTo(new SentencePieceEntry("<unk>", 0, SentencePieceType.Unknown)));
        Assert.That(fromBin.Pieces[1], Is.EqualTo(new SentencePieceEntry("<s>", 0, SentencePieceType.Control)));
        Assert.That(fromBin.Pieces[2], Is.EqualTo(new SentencePieceEntry("</s>", 0, SentencePieceType.Control)));
        Assert.That(fromBin.Pieces[3 + 0xFD], Is.EqualTo(new SentencePieceEntry("<0xFD>", 0, SentencePieceType.Byte)));
        Assert.That(fromBin.Pieces[29871], Is.EqualTo(new SentencePieceEntry("▁", -1e9f, SentencePieceType.Normal)));
        Assert.That(fromBin.Pieces.Skip(259).Any(p => p.Piece.Contains(' ')), Is.False);
    }

    [Test]
    public void WritesTokenizerConfigAndSpecialTokensMap()
    {
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(StoriesTokenizer.Folder, "tokenizer_config.json")));
        var root = config.RootElement;
        Assert.Multiple(() =>
        {
            Assert.That(root.GetProperty("bos_token").GetString(), Is.EqualTo("<s>"));
            Assert.That(root.GetProperty("eos_token").GetString(), Is.EqualTo("</s>"));
            Assert.That(root.GetProperty("unk_token").GetString(), Is.EqualTo("<unk>"));
            Assert.That(root.GetProperty("add_bos_token").GetBoolean(), Is.True);
            Assert.That(root.GetProperty("add_eos_token").GetBoolean(), Is.False);
            Assert.That(root.GetProperty("tokenizer_class").GetString(), Is.EqualTo("LlamaTokenizer"));
            Assert.That(root.GetProperty("model_max_length").GetInt32(), Is.EqualTo(4096));
        });
        using var map = JsonDocument.Parse(File.ReadAllText(Path.Combine(StoriesTokenizer.Folder, "special_tokens_map.json")));
        Assert.That(map.RootElement.GetProperty("eos_token").GetString(), Is.EqualTo("</s>"));
    }

    // Offsets of token `index` in the real tokenizer.bin, for building broken copies.
    static int OffsetOfToken(byte[] bytes, int index)
    {
        int offset = 4;
        for (int i = 0; i < index; i++) offset += 8 + BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(offset + 4));
        return offset;
    }

    static TokenizerException ConvertBroken(byte[] bytes)
    {
        var dir = StoriesTokenizer.NewTempFolder();
        var path = Path.Combine(dir, "tokenizer.bin");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<TokenizerException>(() => Llama2cTokenizerConverter.WriteTokenizerFiles(path, Path.Combine(dir, "out")))!;
        Assert.That(e.Message, Does.Contain(path));
        Assert.That(File.Exists(Path.Combine(dir, "out", "tokenizer.model")), Is.False);
        return e;
    }

    [Test]
    public void TruncatedFileNamesTheToken()
    {
        var bytes = File.ReadAllBytes(TestAssets.Llama2cTokenizerBin);
        int cut = OffsetOfToken(bytes, 1234) + 10; // inside token 1234's text
        var e = ConvertBroken(bytes[..cut]);
        Assert.That(e.Message, Does.Contain("token index 1234"));
    }

    [Test]
    public void AbsurdLengthNamesTheToken()
    {
        var bytes = File.ReadAllBytes(TestAssets.Llama2cTokenizerBin);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(OffsetOfToken(bytes, 500) + 4), 1_000_000);
        Assert.That(ConvertBroken(bytes).Message, Does.Contain("token index 500").And.Contain("1000000"));
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(OffsetOfToken(bytes, 400) + 4), -5);
        Assert.That(ConvertBroken(bytes).Message, Does.Contain("token index 400"));
    }

    [Test]
    public void WrongVocabularySizeIsReported()
    {
        var bytes = File.ReadAllBytes(TestAssets.Llama2cTokenizerBin);
        Assert.That(ConvertBroken(bytes[..OffsetOfToken(bytes, 31999)]).Message, Does.Contain("31999 tokens, expected 32000"));
        var extra = bytes.Concat(BitConverter.GetBytes(0f)).Concat(BitConverter.GetBytes(1)).Concat("x"u8.ToArray()).ToArray();
        Assert.That(ConvertBroken(extra).Message, Does.Contain("token index 32000"));
    }

    [Test]
    public void BadHeaderInvalidUtf8AndMisplacedBytePiecesAreReported()
    {
        Assert.That(ConvertBroken(new byte[] { 1, 0 }).Message, Does.Contain("too short"));
        var bytes = File.ReadAllBytes(TestAssets.Llama2cTokenizerBin);
        var badHeader = (byte[])bytes.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(badHeader, 0);
        Assert.That(ConvertBroken(badHeader).Message, Does.Contain("max_token_length 0"));

        var badUtf8 = (byte[])bytes.Clone();
        badUtf8[OffsetOfToken(bytes, 1000) + 8] = 0xFF;
        Assert.That(ConvertBroken(badUtf8).Message, Does.Contain("token index 1000").And.Contain("UTF-8"));

        var badByte = (byte[])bytes.Clone();
        badByte[OffsetOfToken(bytes, 3 + 'A') + 8] = (byte)'B';
        Assert.That(ConvertBroken(badByte).Message, Does.Contain($"token index {3 + 'A'}").And.Contain("<0x41>"));
    }

    [Test]
    public void MissingFileIsATokenizerException()
    {
        var path = Path.Combine(StoriesTokenizer.NewTempFolder(), "absent.bin");
        var e = Assert.Throws<TokenizerException>(() => Llama2cTokenizerConverter.WriteTokenizerFiles(path, Path.GetTempPath()))!;
        Assert.That(e.Message, Does.Contain(path));
    }

    [Test]
    public void MalformedTokenizerModelIsReported()
    {
        var dir = StoriesTokenizer.NewTempFolder();
        var model = File.ReadAllBytes(Path.Combine(StoriesTokenizer.Folder, "tokenizer.model"));
        var path = Path.Combine(dir, "tokenizer.model");
        File.WriteAllBytes(path, model[..(model.Length / 2)]);
        var e = Assert.Throws<TokenizerException>(() => SentencePieceBpeTokenizer.Load(path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("malformed protobuf"));
    }
}
