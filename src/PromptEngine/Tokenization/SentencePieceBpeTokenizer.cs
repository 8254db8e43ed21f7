using System.Text;

namespace PromptEngine.Tokenization;

/// <summary>SentencePiece BPE (the Llama family's tokenizer.model) with SentencePiece's exact merge
/// order: normalize (dummy prefix '▁', spaces to '▁'), split into code points, then repeatedly merge
/// the adjacent pair whose concatenation is a vocabulary piece of the highest score, the leftmost
/// such pair on equal scores; characters left outside the vocabulary fall back to UTF-8 byte pieces
/// &lt;0xXX&gt;.</summary>
/// <remarks>Why not Microsoft.ML.Tokenizers' own SentencePiece BPE: on equal scores it merges the
/// rightmost pair where SentencePiece merges the leftmost, so runs of one character ("Hmmm", "!!!!!",
/// "--------", sixteen spaces, all pieces with tied scores in Llama's vocabulary) encode differently
/// from the ids the model was trained on; and it returns no BOS for an empty text. The library still
/// loads and validates the file (<see cref="Load"/> fails if it cannot), and the tests compare its
/// vocabulary with ours.</remarks>
public sealed class SentencePieceBpeTokenizer : ITextTokenizer
{
    /// <summary>SentencePiece's whitespace symbol '▁' (U+2581).</summary>
    public const char SpaceSymbol = '\u2581';

    /// <summary>What SentencePiece prints for &lt;unk&gt; (its default unk_surface, " ⁇ ").</summary>
    const string UnknownSurface = " \u2047 ";

    readonly string[] pieces;
    readonly SentencePieceType[] types;
    readonly Dictionary<string, (int Id, float Score)> mergeable;
    readonly Dictionary<string, (int Id, float Score)>.AlternateLookup<ReadOnlySpan<char>> mergeableBySpan;
    readonly Dictionary<string, int> reserved;
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> reservedBySpan;
    readonly string[] userDefinedLongestFirst;
    readonly int[] byteIds = new int[256];
    readonly int maxPieceChars;
    readonly bool addDummyPrefix, removeExtraWhitespaces, escapeWhitespaces, byteFallback;

    /// <inheritdoc/>
    public int VocabSize => pieces.Length;

    /// <inheritdoc/>
    public int BosId { get; private set; }

    /// <inheritdoc/>
    public int EosId { get; private set; }

    /// <summary>Id of &lt;unk&gt;.</summary>
    public int UnknownId { get; }

    /// <summary>Microsoft.ML.Tokenizers' view of the same model (vocabulary, special ids).</summary>
    internal Microsoft.ML.Tokenizers.SentencePieceTokenizer? Library { get; }

    /// <summary>Loads a SentencePiece BPE tokenizer.model. Throws <see cref="TokenizerException"/>
    /// naming the file when it is unreadable, not BPE, or uses normalization rules this encoder does
    /// not implement (a precompiled charsmap, whitespace as suffix).</summary>
    public static SentencePieceBpeTokenizer Load(string modelPath)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(modelPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TokenizerException($"{modelPath}: cannot read tokenizer.model: {e.Message}", e);
        }
        var model = SentencePieceModelProto.Parse(bytes, modelPath);
        Microsoft.ML.Tokenizers.SentencePieceTokenizer library;
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            library = Microsoft.ML.Tokenizers.LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new TokenizerException($"{modelPath}: Microsoft.ML.Tokenizers cannot load it as a SentencePiece model: {e.Message}", e);
        }
        return new SentencePieceBpeTokenizer(model, modelPath, library);
    }

    internal SentencePieceBpeTokenizer(SentencePieceModelProto model, string sourceName, Microsoft.ML.Tokenizers.SentencePieceTokenizer? library = null)
    {
        if (model.ModelType != SentencePieceModelProto.ModelTypeBpe)
            throw new TokenizerException($"{sourceName}: trainer_spec.model_type is {model.ModelType}; only BPE (2) is supported");
        if (model.PrecompiledCharsmapLength > 0)
            throw new TokenizerException($"{sourceName}: normalizer_spec '{model.NormalizerName}' has a precompiled charsmap (e.g. NFKC); only the identity normalizer is supported");
        if (model.TreatWhitespaceAsSuffix)
            throw new TokenizerException($"{sourceName}: trainer_spec.treat_whitespace_as_suffix is not supported");
        if (model.Pieces.Count == 0)
            throw new TokenizerException($"{sourceName}: no pieces");

        Library = library;
        int n = model.Pieces.Count;
        pieces = new string[n];
        types = new SentencePieceType[n];
        mergeable = new Dictionary<string, (int, float)>(n, StringComparer.Ordinal);
        reserved = new Dictionary<string, int>(StringComparer.Ordinal);
        var userDefined = new List<string>();
        Array.Fill(byteIds, -1);
        for (int id = 0; id < n; id++)
        {
            var p = model.Pieces[id];
            pieces[id] = p.Piece;
            types[id] = p.Type;
            // SentencePiece keeps NORMAL, USER_DEFINED and UNUSED pieces in the table merges look up,
            // and CONTROL, UNKNOWN and BYTE pieces apart, reachable only by id.
            bool normal = p.Type is SentencePieceType.Normal or SentencePieceType.UserDefined or SentencePieceType.Unused;
            bool added = normal ? mergeable.TryAdd(p.Piece, (id, p.Score)) : reserved.TryAdd(p.Piece, id);
            if (!added) throw new TokenizerException($"{sourceName}: pieces[{id}] '{p.Piece}' is already defined");
            if (p.Type == SentencePieceType.UserDefined) userDefined.Add(p.Piece);
            if (p.Type == SentencePieceType.Byte)
            {
                if (!TryParseBytePiece(p.Piece, out byte b))
                    throw new TokenizerException($"{sourceName}: pieces[{id}] '{p.Piece}' is of type BYTE but not <0xXX>");
                byteIds[b] = id;
            }
            if (normal) maxPieceChars = Math.Max(maxPieceChars, p.Piece.Length);
        }
        mergeableBySpan = mergeable.GetAlternateLookup<ReadOnlySpan<char>>();
        reservedBySpan = reserved.GetAlternateLookup<ReadOnlySpan<char>>();
        userDefinedLongestFirst = userDefined.OrderByDescending(s => s.Length).ToArray();

        UnknownId = CheckId(model.UnkId, "unk_id", sourceName, SentencePieceType.Unknown, required: true);
        BosId = CheckId(model.BosId, "bos_id", sourceName, SentencePieceType.Control, required: false);
        EosId = CheckId(model.EosId, "eos_id", sourceName, SentencePieceType.Control, required: false);
        addDummyPrefix = model.AddDummyPrefix;
        removeExtraWhitespaces = model.RemoveExtraWhitespaces;
        escapeWhitespaces = model.EscapeWhitespaces;
        byteFallback = model.ByteFallback;
    }

    int CheckId(int id, string field, string sourceName, SentencePieceType expected, bool required)
    {
        if (id < 0 && !required) return -1;
        if (id < 0 || id >= pieces.Length)
            throw new TokenizerException($"{sourceName}: trainer_spec.{field} = {id} is outside the {pieces.Length} pieces");
        if (types[id] != expected)
            throw new TokenizerException($"{sourceName}: trainer_spec.{field} = {id} names '{pieces[id]}' of type {types[id]}, expected {expected}");
        return id;
    }

    static bool TryParseBytePiece(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }

    internal void SetSpecialIds(int bosId, int eosId) => (BosId, EosId) = (bosId, eosId);

    internal bool TryGetTokenId(string piece, out int id)
    {
        if (reserved.TryGetValue(piece, out id)) return true;
        if (mergeable.TryGetValue(piece, out var hit)) { id = hit.Id; return true; }
        return false;
    }

    /// <summary>The piece text of <paramref name="id"/> (with '▁' for spaces, &lt;0xXX&gt; for bytes).</summary>
    public string IdToPiece(int id) =>
        (uint)id < (uint)pieces.Length ? pieces[id] : throw new ArgumentOutOfRangeException(nameof(id), id, $"outside the {pieces.Length} pieces");

    #region Encode

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text, bool addBos)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) ids.Add(BosId);
        string normalized = Normalize(text);
        if (normalized.Length == 0) return ids;

        // Symbols are spans [start, start + length) of `normalized`, linked into a list; a merge grows
        // the left symbol over the right one and empties the right one.
        int capacity = normalized.Length;
        var start = new int[capacity];
        var length = new int[capacity];
        var prev = new int[capacity];
        var next = new int[capacity];
        var frozen = new bool[capacity];
        int count = 0;
        for (int pos = 0; pos < normalized.Length;)
        {
            int len = MatchUserDefined(normalized, pos);
            bool isUserDefined = len > 0;
            if (!isUserDefined) len = char.IsHighSurrogate(normalized[pos]) && pos + 1 < normalized.Length && char.IsLowSurrogate(normalized[pos + 1]) ? 2 : 1;
            start[count] = pos;
            length[count] = len;
            frozen[count] = isUserDefined;
            prev[count] = count - 1;
            next[count] = -1;
            if (count > 0) next[count - 1] = count;
            count++;
            pos += len;
        }

        // Agenda of candidate merges, best first: higher score, then smaller left index (leftmost).
        var agenda = new PriorityQueue<(int Left, int Right, int Length), (float Score, int Left)>(count, AgendaOrder.Instance);
        void MaybeAddPair(int left, int right)
        {
            if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
            int merged = length[left] + length[right];
            if (merged > maxPieceChars) return;
            if (mergeableBySpan.TryGetValue(normalized.AsSpan(start[left], merged), out var hit))
                agenda.Enqueue((left, right, merged), (hit.Score, left));
        }
        for (int i = 1; i < count; i++) MaybeAddPair(i - 1, i);

        while (agenda.TryDequeue(out var top, out _))
        {
            // Stale entries (a side already merged elsewhere) no longer describe two neighbours of
            // the recorded total length.
            if (length[top.Left] == 0 || length[top.Right] == 0 || next[top.Left] != top.Right
                || length[top.Left] + length[top.Right] != top.Length) continue;
            length[top.Left] = top.Length;
            length[top.Right] = 0;
            next[top.Left] = next[top.Right];
            if (next[top.Right] >= 0) prev[next[top.Right]] = top.Left;
            MaybeAddPair(prev[top.Left], top.Left);
            MaybeAddPair(top.Left, next[top.Left]);
        }

        Span<byte> scratch = stackalloc byte[16];
        for (int s = 0; s != -1; s = next[s])
        {
            var piece = normalized.AsSpan(start[s], length[s]);
            if (reservedBySpan.TryGetValue(piece, out int reservedId)) ids.Add(reservedId);
            else if (mergeableBySpan.TryGetValue(piece, out var normal)) ids.Add(normal.Id);
            else if (byteFallback)
            {
                // Only single code points (or user-defined symbols) can be missing from the table.
                int maxBytes = Encoding.UTF8.GetMaxByteCount(piece.Length);
                Span<byte> utf8 = maxBytes <= scratch.Length ? scratch : new byte[maxBytes];
                int written = Encoding.UTF8.GetBytes(piece, utf8);
                foreach (byte b in utf8[..written]) ids.Add(byteIds[b] >= 0 ? byteIds[b] : UnknownId);
            }
            else ids.Add(UnknownId);
        }
        return ids;
    }

    /// <summary>SentencePiece's identity normalization: optional collapsing of extra spaces, the dummy
    /// prefix, spaces escaped as '▁'; an unpaired surrogate becomes U+FFFD, as invalid UTF-8 does in
    /// SentencePiece. Empty text stays empty (no dummy prefix).</summary>
    internal string Normalize(string text)
    {
        if (removeExtraWhitespaces)
        {
            var collapsed = new StringBuilder(text.Length);
            bool pendingSpace = false;
            foreach (char c in text)
            {
                if (c == ' ') { pendingSpace = collapsed.Length > 0; continue; }
                if (pendingSpace) collapsed.Append(' ');
                pendingSpace = false;
                collapsed.Append(c);
            }
            text = collapsed.ToString();
        }
        if (text.Length == 0) return "";
        var sb = new StringBuilder(text.Length + 1);
        if (addDummyPrefix) sb.Append(escapeWhitespaces ? SpaceSymbol : ' ');
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == ' ' && escapeWhitespaces) sb.Append(SpaceSymbol);
            else if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { sb.Append(c).Append(text[i + 1]); i++; }
            else if (char.IsSurrogate(c)) sb.Append('\uFFFD');
            else sb.Append(c);
        }
        return sb.ToString();
    }

    int MatchUserDefined(string normalized, int pos)
    {
        foreach (var symbol in userDefinedLongestFirst)
            if (pos + symbol.Length <= normalized.Length && string.CompareOrdinal(normalized, pos, symbol, 0, symbol.Length) == 0) return symbol.Length;
        return 0;
    }

    sealed class AgendaOrder : IComparer<(float Score, int Left)>
    {
        public static readonly AgendaOrder Instance = new();

        public int Compare((float Score, int Left) x, (float Score, int Left) y)
        {
            int byScore = y.Score.CompareTo(x.Score); // higher score first
            return byScore != 0 ? byScore : x.Left.CompareTo(y.Left); // then leftmost
        }
    }

    #endregion

    #region Decode

    /// <inheritdoc/>
    /// <remarks>SentencePiece's rules: control pieces vanish, '▁' becomes ' ', runs of byte pieces
    /// are reassembled as UTF-8 (an invalid byte becomes U+FFFD), and the one '▁' the dummy prefix
    /// put before the first word is dropped. Written here rather than taken from the library because
    /// the library departs from SentencePiece where it matters least but still matters: it drops
    /// &lt;unk&gt; (SentencePiece prints " ⁇ "), folds a broken UTF-8 sequence into one U+FFFD
    /// (SentencePiece gives one per byte), and strips the space of "▁word" after a leading byte run
    /// ([&lt;0x0A&gt;, ▁Once] → "\nOnce"; SentencePiece: "\n Once").</remarks>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var text = new StringBuilder();
        var bytes = new List<byte>();
        bool isBosWhitespace = true, bosWhitespaceSeen = false;
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)pieces.Length)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id outside the {pieces.Length} pieces");
            if (types[id] == SentencePieceType.Byte)
            {
                TryParseBytePiece(pieces[id], out byte b);
                bytes.Add(b);
                continue;
            }
            FlushBytes(text, bytes);
            if (bosWhitespaceSeen || text.Length > 0) isBosWhitespace = false;
            bosWhitespaceSeen = false;
            switch (types[id])
            {
                case SentencePieceType.Control: break;
                case SentencePieceType.Unknown: text.Append(UnknownSurface); break;
                default:
                    var piece = pieces[id].AsSpan();
                    if (isBosWhitespace && (addDummyPrefix || removeExtraWhitespaces) && piece.Length > 0 && piece[0] == SpaceSymbol)
                    {
                        piece = piece[1..];
                        bosWhitespaceSeen = !removeExtraWhitespaces;
                    }
                    foreach (char c in piece) text.Append(c == SpaceSymbol ? ' ' : c);
                    break;
            }
        }
        FlushBytes(text, bytes);
        return text.ToString();
    }

    static void FlushBytes(StringBuilder text, List<byte> bytes)
    {
        // SentencePiece decodes a run of byte pieces one code point at a time and maps each byte that
        // does not start a valid sequence to U+FFFD on its own (.NET's decoder would fold a truncated
        // sequence into one U+FFFD).
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes);
        while (!span.IsEmpty)
        {
            if (Rune.DecodeFromUtf8(span, out var rune, out int consumed) == System.Buffers.OperationStatus.Done)
            {
                text.Append(rune.ToString());
                span = span[consumed..];
            }
            else
            {
                text.Append('\uFFFD');
                span = span[1..];
            }
        }
        bytes.Clear();
    }

    #endregion
}
