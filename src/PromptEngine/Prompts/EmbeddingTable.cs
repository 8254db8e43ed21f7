using System.Runtime.InteropServices;
using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Prompts;

/// <summary>Row access to a model's token embedding table (V, C) straight from the memory map, so that
/// initialising a prompt never widens a whole multi-gigabyte table to floats.</summary>
internal sealed class EmbeddingTable
{
    readonly SafetensorsFile file;
    readonly TensorInfo info;

    public string TensorName => info.Name;
    public int Rows { get; }
    public int Width { get; }

    public EmbeddingTable(ModelFolder model)
    {
        var name = model.Weights.Get(WeightRole.TokenEmbedding).Name;
        file = ModelFingerprint.FileHolding(model.Tensors, name);
        file.TryGetTensor(name, out info);
        Rows = checked((int)info.Shape[0]);
        Width = checked((int)info.Shape[1]);
    }

    /// <summary>Copies rows [first, first + destination.Length / C) as floats.</summary>
    public void ReadRows(int first, Span<float> destination)
    {
        int rows = destination.Length / Width;
        if (first < 0 || rows < 0 || first + rows > Rows || rows * Width != destination.Length)
            throw new ArgumentOutOfRangeException(nameof(first), $"rows [{first}, {first + rows}) are not inside the table's {Rows}");
        int size = DTypes.SizeOf(info.DType);
        long offset = (long)first * Width * size;
        switch (info.DType)
        {
            case DType.F32:
                file.ReadBytes(info, offset, MemoryMarshal.AsBytes(destination));
                if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("big-endian hosts are not supported");
                break;
            case DType.F16 or DType.BF16:
                var bits = new ushort[destination.Length];
                file.ReadBytes(info, offset, MemoryMarshal.AsBytes(bits.AsSpan()));
                if (info.DType == DType.F16) HalfConversions.F16ToFloat(bits, destination);
                else HalfConversions.BF16ToFloat(bits, destination);
                break;
            default:
                throw new SafetensorsException(file.Path, info.Name, $"dtype {info.DType}; an embedding table must be F32, F16 or BF16");
        }
    }

    /// <summary>Row <paramref name="row"/> as a new array (C floats).</summary>
    public float[] Row(int row)
    {
        var values = new float[Width];
        ReadRows(row, values);
        return values;
    }

    /// <summary>Mean and population standard deviation of all V·C values, in double, read in blocks of rows.</summary>
    public (double Mean, double Std, double MaxAbs) Statistics()
    {
        int block = Math.Max(1, (1 << 20) / Width);
        var buffer = new float[block * Width];
        double mean = 0, m2 = 0, maxAbs = 0;
        long count = 0;
        for (int first = 0; first < Rows; first += block)
        {
            int rows = Math.Min(block, Rows - first);
            var span = buffer.AsSpan(0, rows * Width);
            ReadRows(first, span);
            // Per-block sums merged with Chan's formula keep the double accumulation accurate for huge tables.
            double blockSum = 0;
            foreach (var v in span) blockSum += v;
            double blockMean = blockSum / span.Length, blockM2 = 0;
            foreach (var v in span)
            {
                double d = v - blockMean;
                blockM2 += d * d;
                maxAbs = Math.Max(maxAbs, Math.Abs(v));
            }
            long total = count + span.Length;
            double delta = blockMean - mean;
            mean += delta * span.Length / total;
            m2 += blockM2 + delta * delta * count * span.Length / total;
            count = total;
        }
        return (mean, Math.Sqrt(m2 / count), maxAbs);
    }
}
