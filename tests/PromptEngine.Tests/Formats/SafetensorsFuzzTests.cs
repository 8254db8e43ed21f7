using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Formats;

/// <summary>Seeded mutations of valid files. Each mutant must either open and read every tensor with the
/// right size and the exact bytes the header points at, or be rejected with <see cref="SafetensorsException"/>;
/// any other outcome fails with the seed and mutation so it can be replayed.</summary>
public class SafetensorsFuzzTests
{
    private const int Iterations = 3000;
    private static readonly string[] DTypeSpellings = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "U16", "F8_E4M3", "f32", "", "F3"];
    private static readonly string[] NumberSpellings = ["0", "1", "2", "3", "4", "7", "8", "-1", "-0", "1.5", "2.0", "1e3", "4294967296", "9223372036854775807", "9223372036854775808", "99999999999999999999999", "null", "\"4\"", "[]"];

    private SafetensorsTestFiles _files = null!;

    [SetUp] public void SetUp() => _files = new SafetensorsTestFiles();
    [TearDown] public void TearDown() => _files.Dispose();

    [Test]
    public void MutatedFilesLoadCorrectlyOrThrowSafetensorsException()
    {
        var seeds = BuildSeedFiles();
        var path = _files.PathOf("mutant.safetensors");
        var failures = new List<string>();
        int accepted = 0, rejected = 0;
        var kinds = new int[Mutations.Length];
        var clock = Stopwatch.StartNew();
        // Every (seed file, mutation kind) pair gets its share; each mutant's details come from its own
        // seed, drawn from a master generator (consecutive seeds give correlated first draws).
        var master = new Random(20_251);
        for (int i = 0; i < Iterations; i++)
        {
            int seed = master.Next();
            var random = new Random(seed);
            var (seedName, original) = seeds[i % seeds.Count];
            int kind = i / seeds.Count % Mutations.Length;
            kinds[kind]++;
            var (mutant, description) = Mutations[kind](original, random);
            if (random.Next(4) == 0)
            {
                // A second, byte-level mutation on top (these need no valid header to work on).
                int secondKind = mutant.Length == 0 ? 3 : random.Next(ByteLevelMutations);
                var (again, second) = Mutations[secondKind](mutant, random);
                (mutant, description) = (again, $"{description}; then {second}");
            }
            File.WriteAllBytes(path, mutant);
            try
            {
                CheckAcceptedFile(path, mutant);
                accepted++;
            }
            catch (SafetensorsException e)
            {
                rejected++;
                if (!e.Message.Contains(path)) failures.Add($"seed {seed} ({seedName}, {MutationNames[kind]}: {description}): message does not name the file: {e.Message}");
            }
            catch (Exception e)
            {
                failures.Add($"seed {seed} ({seedName}, {MutationNames[kind]}: {description}): {e.GetType().Name}: {e.Message}");
            }
        }
        clock.Stop();

        TestContext.Out.WriteLine($"fuzz: {Iterations} mutants of {seeds.Count} seed files in {clock.Elapsed.TotalSeconds:F2} s " +
                                  $"({accepted} accepted and verified, {rejected} rejected); per kind: " +
                                  string.Join(", ", MutationNames.Zip(kinds, (n, k) => $"{n} {k}")));
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(20)));
        // Both outcomes must actually occur, or the oracle has not been exercised.
        Assert.That(accepted, Is.GreaterThan(Iterations / 20));
        Assert.That(rejected, Is.GreaterThan(Iterations / 4));
    }

    /// <summary>Reads every tensor and checks it against the mutant's own bytes at the offsets the
    /// header states, plus the layout invariants a valid file must have.</summary>
    private static void CheckAcceptedFile(string path, byte[] bytes)
    {
        using var file = SafetensorsFile.Open(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        long dataStart = 8 + headerLength;
        long dataLength = bytes.Length - dataStart;
        if (file.Tensors.Sum(t => t.ByteLength) != dataLength)
            throw new InvalidOperationException($"tensors cover {file.Tensors.Sum(t => t.ByteLength)} bytes of a {dataLength}-byte data section");
        for (int i = 1; i < file.Tensors.Count; i++)
        {
            if (string.CompareOrdinal(file.Tensors[i - 1].Name, file.Tensors[i].Name) >= 0)
                throw new InvalidOperationException("tensors not strictly sorted by name");
        }
        foreach (var t in file.Tensors)
        {
            if (t.ElementCount * DTypes.SizeOf(t.DType) != t.ByteLength || t.DataStart < 0 || t.DataEnd > dataLength)
                throw new InvalidOperationException($"tensor '{t.Name}' has inconsistent info {t}");
            var read = new byte[t.ByteLength];
            file.ReadBytes(t, read);
            if (!read.AsSpan().SequenceEqual(bytes.AsSpan((int)(dataStart + t.DataStart), (int)t.ByteLength)))
                throw new InvalidOperationException($"tensor '{t.Name}' bytes differ from the file at its offsets");
            if (t.DType is DType.F32 or DType.F16 or DType.BF16 && file.ReadF32(t.Name).Length != t.ElementCount)
                throw new InvalidOperationException($"tensor '{t.Name}' ReadF32 length wrong");
            if (t.DType is DType.F16 or DType.BF16 && file.ReadRaw16(t.Name).Length != t.ElementCount)
                throw new InvalidOperationException($"tensor '{t.Name}' ReadRaw16 length wrong");
        }
        _ = file.Metadata.Count;
    }

    private List<(string Name, byte[] Bytes)> BuildSeedFiles()
    {
        var seeds = new List<(string, byte[])>();
        void Add(string name, IEnumerable<TensorToWrite> tensors, Dictionary<string, string>? metadata = null)
        {
            var path = _files.PathOf(name);
            SafetensorsWriter.Write(path, tensors, metadata);
            seeds.Add((name, File.ReadAllBytes(path)));
        }
        Add("mixed", [
            TensorToWrite.F32("model.embed", [4, 3], Enumerable.Range(0, 12).Select(i => i * 0.5f).ToArray()),
            TensorToWrite.F16("layers.0.attn", [2, 2], [1f, -2f, 0.5f, 3f]),
            TensorToWrite.BF16("layers.0.norm", [3], [1f, 1f, 1f]),
            TensorToWrite.Of("ids", DType.I64, [2], new long[] { 1, 2 }),
            TensorToWrite.Of("mask", DType.BOOL, [5], new byte[] { 1, 0, 1, 1, 0 }),
            TensorToWrite.Of("bytes", DType.U8, [3], new byte[] { 7, 8, 9 }),
            TensorToWrite.F32("empty", [0, 4], []),
        ], new Dictionary<string, string> { ["format"] = "pt", ["step"] = "12" });
        Add("single", [TensorToWrite.F32("w", [8], Enumerable.Range(0, 8).Select(i => (float)i).ToArray())]);
        Add("many-halves", Enumerable.Range(0, 10).Select(i =>
            i % 2 == 0 ? TensorToWrite.F16($"t{i}", [i + 1], new float[i + 1]) : TensorToWrite.BF16($"t{i}", [1, i], new float[i])));
        Add("zero-only", [TensorToWrite.F32("a", [0], []), TensorToWrite.F16("b", [2, 0], [])]);
        Add("empty", []);
        // Non-canonical: entries out of offset order, no padding, extra field.
        var hand = "{\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[4,12]},\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}";
        var handBytes = new byte[8 + hand.Length + 12];
        BinaryPrimitives.WriteUInt64LittleEndian(handBytes, (ulong)hand.Length);
        Encoding.UTF8.GetBytes(hand).CopyTo(handBytes, 8);
        SafetensorsTestFiles.Sequence(12, 3).CopyTo(handBytes, 8 + hand.Length);
        seeds.Add(("hand", handBytes));
        return seeds;
    }

    private static readonly string[] MutationNames = ["bitflip", "overwrite", "truncate", "append", "headerlength", "digits", "dtype", "duplicate", "jsonsplice"];

    /// <summary>The first four mutations work on any non-empty bytes (append on any); the rest edit a valid header's text.</summary>
    private const int ByteLevelMutations = 4;

    private static readonly Func<byte[], Random, (byte[], string)>[] Mutations =
    [
        BitFlips, Overwrite, Truncate, Append, HeaderLength, EditDigits, EditDType, DuplicateKey, SpliceJson,
    ];

    private static (byte[], string) BitFlips(byte[] original, Random random)
    {
        var bytes = (byte[])original.Clone();
        var flips = new List<string>();
        // Mostly inside the 8-byte length and the header, where flips matter most.
        for (int n = random.Next(1, 5); n > 0; n--)
        {
            int position = random.Next(2) == 0 ? random.Next(HeaderEnd(bytes)) : random.Next(bytes.Length);
            int bit = random.Next(8);
            bytes[position] ^= (byte)(1 << bit);
            flips.Add($"{position}:{bit}");
        }
        return (bytes, $"bitflip {string.Join(",", flips)}");
    }

    private static (byte[], string) Overwrite(byte[] original, Random random)
    {
        var bytes = (byte[])original.Clone();
        byte[] interesting = [(byte)'{', (byte)'}', (byte)'"', (byte)'[', (byte)']', (byte)',', (byte)':', (byte)'0', (byte)'9', (byte)'-', (byte)'.', (byte)' ', 0x00, 0xFF, 0xC3, 0x80];
        int position = random.Next(bytes.Length);
        byte value = random.Next(2) == 0 ? interesting[random.Next(interesting.Length)] : (byte)random.Next(256);
        bytes[position] = value;
        return (bytes, $"overwrite [{position}]=0x{value:X2}");
    }

    private static (byte[], string) Truncate(byte[] original, Random random)
    {
        int length = random.Next(original.Length);
        return (original[..length], $"truncate to {length}");
    }

    private static (byte[], string) Append(byte[] original, Random random)
    {
        var extra = new byte[random.Next(1, 17)];
        random.NextBytes(extra);
        return ([.. original, .. extra], $"append {extra.Length} bytes");
    }

    private static (byte[], string) HeaderLength(byte[] original, Random random)
    {
        var bytes = (byte[])original.Clone();
        long current = HeaderLengthOf(original);
        ulong value = random.Next(6) switch
        {
            0 => (ulong)Math.Max(0, current + random.Next(-9, 10)),
            1 => 0,
            2 => (ulong)bytes.Length,
            3 => 100_000_000UL + (ulong)random.Next(2),
            4 => (ulong)random.NextInt64(),
            _ => ulong.MaxValue - (ulong)random.Next(3),
        };
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        return (bytes, $"header length {current} -> {value}");
    }

    private static (byte[], string) EditDigits(byte[] original, Random random) =>
        EditHeader(original, random, header =>
        {
            var runs = Regex.Matches(header, "[0-9]+");
            if (runs.Count == 0) return (header, "no digits");
            var run = runs[random.Next(runs.Count)];
            string replacement = random.Next(3) == 0
                ? (long.Parse(run.Value.Length > 18 ? "0" : run.Value) + random.Next(-3, 4)).ToString()
                : NumberSpellings[random.Next(NumberSpellings.Length)];
            return (header[..run.Index] + replacement + header[(run.Index + run.Length)..], $"digits '{run.Value}'@{run.Index} -> '{replacement}'");
        });

    private static (byte[], string) EditDType(byte[] original, Random random) =>
        EditHeader(original, random, header =>
        {
            var names = Regex.Matches(header, "\"dtype\":\"([A-Z0-9_]*)\"");
            if (names.Count == 0) return (header, "no dtype");
            var group = names[random.Next(names.Count)].Groups[1];
            var replacement = DTypeSpellings[random.Next(DTypeSpellings.Length)];
            return (header[..group.Index] + replacement + header[(group.Index + group.Length)..], $"dtype '{group.Value}' -> '{replacement}'");
        });

    /// <summary>Repeats one top-level entry (tensor or metadata), verbatim or with changed offsets.</summary>
    private static (byte[], string) DuplicateKey(byte[] original, Random random) =>
        EditHeader(original, random, header =>
        {
            var entries = Regex.Matches(header, "\"[^\"]*\":\\{[^{}]*\\}");
            if (entries.Count == 0) return (header, "no entry");
            var entry = entries[random.Next(entries.Count)];
            var copy = random.Next(2) == 0 ? entry.Value : Regex.Replace(entry.Value, "\\[(\\d+),(\\d+)\\]", m => $"[{m.Groups[2].Value},{m.Groups[2].Value}]");
            int at = entry.Index + entry.Length;
            return (header[..at] + "," + copy + header[at..], $"duplicate '{entry.Value[..Math.Min(30, entry.Value.Length)]}' as '{copy[..Math.Min(30, copy.Length)]}'");
        });

    private static (byte[], string) SpliceJson(byte[] original, Random random) =>
        EditHeader(original, random, header =>
        {
            string[] tokens = ["{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "null", "true", "\"x\":1", "{\"a\":{}}", "\"__metadata__\":{\"k\":2}", " ", "é", "\uD800"];
            int start = random.Next(header.Length + 1);
            int remove = random.Next(2) == 0 ? 0 : random.Next(Math.Min(8, header.Length - start) + 1);
            var insert = random.Next(3) == 0 ? "" : tokens[random.Next(tokens.Length)];
            return (header[..start] + insert + header[(start + remove)..], $"splice @{start} -{remove} +'{insert}'");
        });

    /// <summary>Applies a text edit to the header; usually re-encodes the length (and padding) so that the
    /// JSON gets parsed, sometimes keeps the stale length.</summary>
    private static (byte[], string) EditHeader(byte[] original, Random random, Func<string, (string, string)> edit)
    {
        long headerLength = HeaderLengthOf(original);
        var header = Encoding.UTF8.GetString(original, 8, (int)headerLength);
        var (edited, description) = edit(header);
        var data = original.AsSpan((int)(8 + headerLength));
        var headerBytes = Encoding.UTF8.GetBytes(edited).AsEnumerable();
        bool fixLength = random.Next(5) != 0;
        if (fixLength && random.Next(2) == 0)
            headerBytes = headerBytes.Concat(Enumerable.Repeat((byte)' ', (8 - Encoding.UTF8.GetByteCount(edited) % 8) % 8));
        var newHeader = headerBytes.ToArray();
        var bytes = new byte[8 + newHeader.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, fixLength ? (ulong)newHeader.Length : (ulong)headerLength);
        newHeader.CopyTo(bytes, 8);
        data.CopyTo(bytes.AsSpan(8 + newHeader.Length));
        return (bytes, description + (fixLength ? "" : " (stale length)"));
    }

    /// <summary>Where the header of possibly already mutated bytes ends, clamped into the array.</summary>
    private static int HeaderEnd(byte[] bytes) =>
        bytes.Length < 8 ? bytes.Length : (int)Math.Min((ulong)bytes.Length, 8 + Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(bytes), int.MaxValue));

    private static long HeaderLengthOf(byte[] original) => (long)BinaryPrimitives.ReadUInt64LittleEndian(original);
}
