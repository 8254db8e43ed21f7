using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Prompts;

/// <summary>Prompt banks: round trip, stacking (checked in the engine), and the refusals.</summary>
public class PromptBankTests
{
    static SoftPrompt Prompt(int rows, int width, float start, string? tag = null)
    {
        var values = Enumerable.Range(0, rows * width).Select(i => start + i * 0.25f).ToArray();
        var meta = new Dictionary<string, string> { [PromptMetadata.InitMethod] = "random" };
        if (tag is not null) meta["tag"] = tag;
        return new SoftPrompt(values, rows, width, meta);
    }

    static PromptBank ThreePrompts()
    {
        var bank = new PromptBank();
        // Insertion order differs from name order, which safetensors imposes on the tensors.
        bank.Add("zeta", Prompt(3, 4, 1f, "z"));
        bank.Add("alpha", Prompt(1, 4, -5f, "a ✓"));
        bank.Add("mid.v2", Prompt(2, 4, 100f));
        return bank;
    }

    [Test]
    public void RoundTripKeepsOrderValuesAndMetadata()
    {
        var path = Path.Combine(PromptTestModels.TempFolder(), "bank.safetensors");
        var bank = ThreePrompts();
        bank.Save(path);
        var loaded = PromptBank.Load(path);
        Assert.That(loaded.Names, Is.EqualTo(new[] { "zeta", "alpha", "mid.v2" }));
        Assert.That(loaded.Width, Is.EqualTo(4));
        Assert.That(loaded.Source, Is.EqualTo(path));
        foreach (var name in bank.Names)
        {
            var (a, b) = (bank.Get(name), loaded.Get(name));
            Assert.That(b.Values, Is.EqualTo(a.Values), name);
            Assert.That((b.VirtualTokens, b.Width), Is.EqualTo((a.VirtualTokens, a.Width)), name);
            Assert.That(b.Metadata, Is.EquivalentTo(a.Metadata), name);
            Assert.That(b.Source, Is.EqualTo($"{path}#{name}"));
        }
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Tensors.Select(t => t.Name), Is.EquivalentTo(new[] { "prompts.zeta", "prompts.alpha", "prompts.mid.v2" }));
        Assert.That(file.Metadata[PromptMetadata.Content], Is.EqualTo(PromptBank.ContentValue));
        Assert.That(file.Metadata[PromptMetadata.BaseModelWidth], Is.EqualTo("4"));
    }

    [Test]
    public void StackPlacesPromptsInBankOrder()
    {
        var bank = ThreePrompts();
        var (values, rows) = bank.Stack();
        Assert.That(values, Has.Length.EqualTo((3 + 1 + 2) * 4));
        Assert.That(rows["zeta"], Is.EqualTo((0, 3)));
        Assert.That(rows["alpha"], Is.EqualTo((3, 1)));
        Assert.That(rows["mid.v2"], Is.EqualTo((4, 2)));
        foreach (var (name, (first, count)) in rows)
            Assert.That(values.AsSpan(first * 4, count * 4).ToArray(), Is.EqualTo(bank.Get(name).Values), name);
    }

    [Test]
    public void EachBatchRowUsesItsOwnPromptFromTheStackedBank()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 20));
        var init = new PromptInit(model);
        var bank = new PromptBank();
        bank.Add("task-a", init.Random(3, seed: 1));
        bank.Add("task-b", init.Random(2, seed: 2));
        var (stacked, rows) = bank.Stack();
        int[] input = [1, 5, 7, 9], target = [3, 8];

        List<Slot> Row((int FirstRow, int Rows) range, int offset = 0) => BatchBuilder.LanguageModelRow(input, target,
            Enumerable.Range(range.FirstRow - offset, range.Rows).ToArray(), PromptPlacement.Prefix);

        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var both = new TransformerEngine(kernels, model, new EngineOptions(2, 16, 5, Training: false));
        both.SetPrompt(stacked);
        var mixed = both.Logits(BatchBuilder.Build([Row(rows["task-a"]), Row(rows["task-b"])]));
        int V = model.Config.VocabSize, S = target.Length;
        Assert.That(mixed, Has.Length.EqualTo(2 * S * V));

        foreach (var (name, index) in new[] { ("task-a", 0), ("task-b", 1) })
        {
            var prompt = bank.Get(name);
            using var alone = new TransformerEngine(kernels, model, new EngineOptions(1, 16, prompt.VirtualTokens, Training: false));
            alone.SetPrompt(prompt.Values);
            var expected = alone.Logits(BatchBuilder.Build([Row(rows[name], offset: rows[name].FirstRow)]));
            var actual = mixed.AsSpan(index * S * V, S * V).ToArray();
            for (var i = 0; i < expected.Length; i++)
                Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-5f + 1e-5f * Math.Abs(expected[i])), $"{name}: logit {i}");
        }
    }

    [Test]
    public void AddRefusesBadNamesDuplicatesAndOtherWidths()
    {
        var bank = new PromptBank();
        bank.Add("a", Prompt(2, 4, 0f));
        Assert.That(Assert.Throws<ArgumentException>(() => bank.Add("a", Prompt(1, 4, 0f)))!.Message, Does.Contain("'a'").And.Contain("already"));
        Assert.That(Assert.Throws<ArgumentException>(() => bank.Add("b", Prompt(1, 5, 0f)))!.Message, Does.Contain("'b'").And.Contain("5").And.Contain("4"));
        foreach (var bad in new[] { "", "has space", "slash/name", "new\nline", new string('x', 129) })
            Assert.Throws<ArgumentException>(() => bank.Add(bad, Prompt(1, 4, 0f)), $"name '{bad}'");
        var nan = Prompt(1, 4, 0f);
        nan.Values[2] = float.NaN;
        Assert.That(Assert.Throws<PromptFormatException>(() => bank.Add("n", nan))!.Message, Does.Contain("#n").And.Contain("column 2"));
        Assert.That(Assert.Throws<KeyNotFoundException>(() => bank.Get("zzz"))!.Message, Does.Contain("zzz").And.Contain("a"));
        Assert.That(bank.Names, Is.EqualTo(new[] { "a" }));
    }

    [Test]
    public void EmptyBankCannotBeStackedOrSaved()
    {
        var bank = new PromptBank();
        Assert.Throws<InvalidOperationException>(() => bank.Stack());
        var path = Path.Combine(PromptTestModels.TempFolder(), "empty.safetensors");
        Assert.That(Assert.Throws<InvalidOperationException>(() => bank.Save(path))!.Message, Does.Contain(path));
        Assert.That(File.Exists(path), Is.False);
    }

    [Test]
    public void LoadRefusesFilesThatAreNotWellFormedBanks()
    {
        var folder = PromptTestModels.TempFolder();
        string Write(string name, IEnumerable<TensorToWrite> tensors, Dictionary<string, string> meta)
        {
            var path = Path.Combine(folder, name);
            SafetensorsWriter.Write(path, tensors, meta);
            return path;
        }
        var t4 = TensorToWrite.F32("prompts.a", [1, 4], [1, 2, 3, 4]);
        var t5 = TensorToWrite.F32("prompts.b", [1, 5], [1, 2, 3, 4, 5]);
        var bankMeta = (string names) => new Dictionary<string, string> { [PromptMetadata.Content] = PromptBank.ContentValue, [PromptBank.NamesKey] = names };

        var single = Path.Combine(folder, "single.safetensors");
        PromptFile.Save(single, [1, 2, 3, 4], 1, 4);
        var cases = new (string Path, string[] Expected)[]
        {
            (single, ["not a prompt bank", "PromptFile.Load"]),
            (Write("no-names.safetensors", [t4], new() { [PromptMetadata.Content] = PromptBank.ContentValue }), [PromptBank.NamesKey, "missing"]),
            (Write("bad-json.safetensors", [t4], bankMeta("[\"a\"")), [PromptBank.NamesKey, "JSON"]),
            (Write("twice.safetensors", [t4], bankMeta("[\"a\",\"a\"]")), ["'a'", "twice"]),
            (Write("missing.safetensors", [t4], bankMeta("[\"a\",\"c\"]")), ["prompts.c", "missing"]),
            (Write("extra.safetensors", [t4, t5], bankMeta("[\"a\"]")), ["prompts.b", "not one of the prompts"]),
            (Write("widths.safetensors", [t4, t5], bankMeta("[\"a\",\"b\"]")), ["'b'", "5", "4"]),
            (Write("rank.safetensors", [TensorToWrite.F32("prompts.a", [4], [1, 2, 3, 4])], bankMeta("[\"a\"]")), ["prompts.a", "shape"]),
            (Write("nan.safetensors", [TensorToWrite.F32("prompts.a", [1, 4], [1, float.NaN, 3, 4])], bankMeta("[\"a\"]")), ["prompts.a", "non-finite", "column 1"]),
        };
        foreach (var (path, expected) in cases)
        {
            var e = Assert.Throws<PromptFormatException>(() => PromptBank.Load(path), path);
            TestContext.Out.WriteLine(e!.Message);
            Assert.That(e.Message, Does.Contain(path), path);
            foreach (var part in expected) Assert.That(e.Message, Does.Contain(part), path);
        }

        var bankPath = Path.Combine(folder, "bank.safetensors");
        ThreePrompts().Save(bankPath);
        Assert.That(Assert.Throws<PromptFormatException>(() => PromptFile.Load(bankPath))!.Message, Does.Contain("prompt bank"));
    }
}
