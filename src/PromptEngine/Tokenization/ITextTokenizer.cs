namespace PromptEngine.Tokenization;

/// <summary>A text tokenizer of a model folder: text to token ids and back.</summary>
public interface ITextTokenizer
{
    /// <summary>Number of token ids (the embedding table's row count must be at least this).</summary>
    int VocabSize { get; }

    /// <summary>Id of the beginning-of-sequence token, or -1 when the model has none.</summary>
    int BosId { get; }

    /// <summary>Id of the end-of-sequence token, or -1 when the model has none.</summary>
    int EosId { get; }

    /// <summary>Token ids of <paramref name="text"/>, with <see cref="BosId"/> first when
    /// <paramref name="addBos"/> is set and the model has one (also for an empty text).</summary>
    IReadOnlyList<int> Encode(string text, bool addBos);

    /// <summary>The text of <paramref name="ids"/>; special tokens (BOS, EOS) decode to nothing.</summary>
    string Decode(IEnumerable<int> ids);
}

/// <summary>A tokenizer file or folder could not be read; the message names the file (and the
/// token index or field where known) and what is wrong.</summary>
public class TokenizerException : PromptEngineException
{
    /// <summary>Creates the exception with a message naming the file and the problem.</summary>
    public TokenizerException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and the underlying cause.</summary>
    public TokenizerException(string message, Exception innerException) : base(message, innerException) { }
}
