using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace PromptEngine.Kernels;

/// <summary>Which family of kernels a launcher picks for an op.</summary>
/// <remarks>
/// The CPU accelerator runs every kernel thread of a group as an OS thread and synchronises them at
/// each barrier, so shared-memory tiles and group reductions are about a thousand times slower there
/// than barrier-free code. Each heavy op therefore has two kernels of the same math: one shaped for
/// a GPU (tiles in shared memory, one group per row, coalesced one-thread-per-element access) and one
/// shaped for a CPU (no barriers, group size 1, a <see cref="ThreadRun"/> of rows or register micro-tiles per thread).
/// The pattern is the same for every op: the op's launcher reads <see cref="KernelContext.Shape"/> and runs that shape's
/// kernel, loaded once when the launcher is created; kernels of both shapes sit in the op's file, and a GPU family with
/// launch arithmetic of its own (<see cref="FlashAttention"/>, <see cref="LinearBlocked"/>) is a class of its own
/// that the op's launcher hands over to after checking the shapes. Barrier-free kernels (the elementwise family,
/// embeddings, AdamW) are one kernel for both shapes.
/// </remarks>
public enum KernelShape
{
    /// <summary>Barrier-free kernels launched with group size 1: one thread per row or micro-tile.</summary>
    Cpu,

    /// <summary>Shared-memory tiles and group reductions: one group per tile or per row.</summary>
    Gpu,
}

/// <summary>Which accelerator a <see cref="KernelContext"/> should run on.</summary>
public enum KernelBackend
{
    /// <summary>CUDA when a device is present, the CPU otherwise.</summary>
    Auto,

    /// <summary>ILGPU's CPU accelerator, configured with one multiprocessor per core.</summary>
    Cpu,

    /// <summary>The first CUDA device; fails with <see cref="AcceleratorUnavailableException"/> when none is present.</summary>
    Cuda,
}

/// <summary>Thrown when the requested accelerator does not exist on this machine.</summary>
public sealed class AcceleratorUnavailableException : Exception
{
    /// <summary>Creates the exception with a message naming the missing accelerator.</summary>
    public AcceleratorUnavailableException(string message) : base(message) { }
}

/// <summary>Thrown by a launcher when a tensor's length or a dimension does not match the op's shape contract.</summary>
public sealed class KernelShapeException : ArgumentException
{
    /// <summary>Creates the exception; the message names the op, the tensor and both sizes.</summary>
    public KernelShapeException(string message) : base(message) { }
}

/// <summary>
/// Owns the ILGPU context and accelerator, decides which <see cref="KernelShape"/> the launchers use,
/// and holds one launcher per op, so every kernel is compiled and loaded once per accelerator, never
/// per call.
/// </summary>
/// <remarks>
/// On the CPU the device is built with one multiprocessor per core: kernels launched with group size 1
/// then spread their groups over all cores without any barrier traffic. ILGPU's CPU accelerator wakes
/// every thread of every multiprocessor for every launch and makes them meet at a barrier before and
/// after the kernel, whatever the launch's group size, so a launch's fixed cost grows with the threads per
/// multiprocessor: CPU-shaped contexts get the fewest ILGPU allows (one warp of 2), GPU-shaped ones 16
/// (groups of up to 16 threads, 4×4 tiles), which is how the tests check the GPU kernels without a GPU.
/// </remarks>
public sealed class KernelContext : IDisposable
{
    /// <summary>Threads per multiprocessor of a GPU-shaped context's CPU device: the largest group a GPU-shaped kernel gets on the CPU.</summary>
    public const int CpuMaxGroupSize = 16;

    /// <summary>Warp size of the CPU device: the smallest ILGPU accepts; the group reductions' warp shuffles run on it in the tests.</summary>
    public const int CpuWarpSize = 2;

    /// <summary>Largest group the GPU-shaped kernels use on a real GPU.</summary>
    public const int GpuMaxGroupSize = 256;

    /// <summary>The op table: each op's launcher, created (its kernels compiled and loaded) on first use, by type.</summary>
    readonly Dictionary<Type, object> ops = [];

    KernelContext(Context context, Accelerator accelerator, KernelShape shape)
    {
        Context = context;
        Accelerator = accelerator;
        Shape = shape;
        GroupSize = Math.Min(accelerator.MaxNumThreadsPerGroup,
            accelerator.AcceleratorType == AcceleratorType.CPU ? CpuMaxGroupSize : GpuMaxGroupSize);
        GroupSize = 1 << (int)Math.Log2(GroupSize);
        Tile = 1 << ((int)Math.Log2(GroupSize) / 2);
        ParallelThreads = accelerator.AcceleratorType == AcceleratorType.CPU
            ? Environment.ProcessorCount * 4
            : accelerator.NumMultiprocessors * accelerator.MaxNumThreadsPerMultiprocessor;
    }

    /// <summary>The ILGPU context (algorithms enabled, so <c>XMath</c> works in kernels).</summary>
    public Context Context { get; }

    /// <summary>The accelerator every launcher of this context runs on.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>The kernel family the launchers pick: <see cref="KernelShape.Cpu"/> on the CPU, <see cref="KernelShape.Gpu"/> on CUDA, unless overridden.</summary>
    public KernelShape Shape { get; }

    /// <summary>Threads per group of the GPU-shaped row kernels (a power of two).</summary>
    public int GroupSize { get; }

    /// <summary>Edge of the square shared-memory tiles of the GPU-shaped kernels (Tile² ≤ GroupSize).</summary>
    public int Tile { get; }

    /// <summary>How many threads an elementwise kernel is split into on this accelerator; each takes a contiguous chunk.</summary>
    public int ParallelThreads { get; }

    /// <summary>Linear layer: Y = X·Wᵀ + b and dX = dY·W (and, for the reparameterisation MLP only, dW and db).</summary>
    public Linear Linear => Op(static context => new Linear(context));

    /// <summary>RMSNorm forward (saving rstd) and backward to the input.</summary>
    public RmsNorm RmsNorm => Op(static context => new RmsNorm(context));

    /// <summary>Token embedding with the soft prompt concatenated inside the kernel; backward to the prompt only.</summary>
    public Embedding Embedding => Op(static context => new Embedding(context));

    /// <summary>SwiGLU: silu(gate)·up and its backward.</summary>
    public SwiGlu SwiGlu => Op(static context => new SwiGlu(context));

    /// <summary>Rotary position embedding (HF rotate_half) and its backward.</summary>
    public Rope Rope => Op(static context => new Rope(context));

    /// <summary>LayerNorm forward (saving mean and rstd) and backward to the input.</summary>
    public LayerNorm LayerNorm => Op(static context => new LayerNorm(context));

    /// <summary>GELU, tanh approximation, and its backward.</summary>
    public Gelu Gelu => Op(static context => new Gelu(context));

    /// <summary>Residual add.</summary>
    public Residual Residual => Op(static context => new Residual(context));

    /// <summary>Learned absolute positions added to the embedding output (GPT-2).</summary>
    public PositionEmbedding PositionEmbedding => Op(static context => new PositionEmbedding(context));

    /// <summary>In-place scaling (averaging accumulated gradients).</summary>
    public Scale Scale => Op(static context => new Scale(context));
    /// <summary>Causal, masked, grouped-query self-attention and its backward to q, k and v.</summary>
    public Attention Attention => Op(static context => new Attention(context));

    /// <summary>One query per row against a key/value cache with per-row lengths (generation), and the cache append.</summary>
    public AttentionDecode AttentionDecode => Op(static context => new AttentionDecode(context));

    /// <summary>Deep-prompt (prefix) attention: merges trainable per-layer key/value prefixes into <see cref="Attention"/>.</summary>
    public AttentionPrefix AttentionPrefix => Op(static context => new AttentionPrefix(context));

    /// <summary>Fused LM head + softmax + cross-entropy at selected rows, optionally over a restricted vocabulary.</summary>
    public CrossEntropy CrossEntropy => Op(static context => new CrossEntropy(context));

    /// <summary>AdamW step with decoupled weight decay and an optional on-device gradient scale.</summary>
    public AdamW AdamW => Op(static context => new AdamW(context));

    /// <summary>Deterministic two-stage sum of squares and gradient-clipping factor.</summary>
    public GradNorm GradNorm => Op(static context => new GradNorm(context));

    /// <summary>GPU-shaped Linear with 4×4 register blocks and float32, half or bfloat16 weights; <see cref="Linear"/> delegates to it under <see cref="KernelShape.Gpu"/>.</summary>
    public LinearBlocked LinearBlocked => Op(static context => new LinearBlocked(context));

    /// <summary>GPU-shaped FlashAttention-style attention; <see cref="Attention"/> delegates to it under <see cref="KernelShape.Gpu"/>.</summary>
    public FlashAttention FlashAttention => Op(static context => new FlashAttention(context));

    /// <summary>GPU-shaped fused residual add + RMSNorm (one group per row, whatever <see cref="Shape"/> says).</summary>
    public ResidualRmsNorm ResidualRmsNorm => Op(static context => new ResidualRmsNorm(context));

    /// <summary>tanh and its backward from the saved output (prefix tuning's reparameterisation MLP).</summary>
    public Tanh Tanh => Op(static context => new Tanh(context));

    /// <summary>A deep prompt's PEFT layout (Pv, L·2, d) to the engine's (L·2, Pv, d), and back for gradients.</summary>
    public PrefixLayout PrefixLayout => Op(static context => new PrefixLayout(context));

    /// <summary>Gathers listed rows into a compact tensor, and adds a compact gradient back at those rows.</summary>
    public RowGather RowGather => Op(static context => new RowGather(context));

    /// <summary>Seeded uniform values written on the device in any <see cref="WeightFormat"/> (weights generated where they live).</summary>
    public RandomFill RandomFill => Op(static context => new RandomFill(context));

    /// <summary>Creates a context on the requested accelerator.</summary>
    /// <param name="backend">Where to run; <see cref="KernelBackend.Auto"/> prefers CUDA.</param>
    /// <param name="shape">Overrides the kernel family; by default CPU-shaped on the CPU and GPU-shaped on CUDA.
    /// Tests force <see cref="KernelShape.Gpu"/> on the CPU to check the GPU kernels without a GPU.</param>
    /// <param name="cpuMultiprocessors">CPU multiprocessors (worker groups); defaults to <see cref="Environment.ProcessorCount"/>.</param>
    /// <param name="cpuThreadsPerMultiprocessor">Threads of each CPU multiprocessor, a power of two from
    /// <see cref="CpuWarpSize"/> to <see cref="CpuMaxGroupSize"/>: by default <see cref="CpuWarpSize"/> for CPU-shaped
    /// kernels (group size 1; fewer threads make each launch cheaper) and <see cref="CpuMaxGroupSize"/> for GPU-shaped ones.
    /// The CPU-shaped kernels' results do not depend on it.</param>
    /// <exception cref="AcceleratorUnavailableException">CUDA was requested and no CUDA device is present.</exception>
    public static KernelContext Create(KernelBackend backend = KernelBackend.Auto, KernelShape? shape = null, int? cpuMultiprocessors = null,
        int? cpuThreadsPerMultiprocessor = null)
    {
        int cores = cpuMultiprocessors ?? Environment.ProcessorCount;
        if (cores < 1)
            throw new ArgumentOutOfRangeException(nameof(cpuMultiprocessors), cores, "The CPU accelerator needs at least one multiprocessor.");
        int threads = cpuThreadsPerMultiprocessor ?? (shape == KernelShape.Gpu ? CpuMaxGroupSize : CpuWarpSize);
        if (threads < CpuWarpSize || threads > CpuMaxGroupSize || (threads & (threads - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(cpuThreadsPerMultiprocessor), threads,
                $"A CPU multiprocessor has a power of two of threads from {CpuWarpSize} to {CpuMaxGroupSize}.");
        var cpuDevice = new CPUDevice(numThreadsPerWarp: CpuWarpSize, numWarpsPerMultiprocessor: threads / CpuWarpSize, numMultiprocessors: cores);
        var context = Context.Create(builder =>
        {
            builder.CPU(cpuDevice).EnableAlgorithms().Optimize(OptimizationLevel.O2);
            if (backend != KernelBackend.Cpu)
                builder.Cuda();
        });
        try
        {
            Accelerator accelerator;
            var cudaDevices = context.GetCudaDevices();
            if (backend == KernelBackend.Cuda && cudaDevices.Count == 0)
                throw new AcceleratorUnavailableException("KernelContext: CUDA was requested but no CUDA device was found (is the NVIDIA driver installed?).");
            if (backend != KernelBackend.Cpu && cudaDevices.Count > 0)
                accelerator = cudaDevices[0].CreateAccelerator(context);
            else
                accelerator = context.GetCPUDevice(0).CreateAccelerator(context);
            var defaultShape = accelerator.AcceleratorType == AcceleratorType.CPU ? KernelShape.Cpu : KernelShape.Gpu;
            return new KernelContext(context, accelerator, shape ?? defaultShape);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>Creates a context on the first CUDA device with the PTX instruction set pinned, for drivers newer than
    /// ILGPU's version table (ILGPU 1.5.3 knows CUDA drivers up to 12.9; a CUDA 13 driver still JIT-compiles older PTX).</summary>
    /// <param name="instructionSet">The PTX ISA to emit, e.g. <see cref="CudaInstructionSet.ISA_85"/>; null keeps ILGPU's choice.</param>
    /// <param name="shape">Overrides the kernel family (GPU-shaped by default).</param>
    /// <exception cref="AcceleratorUnavailableException">No CUDA device is present.</exception>
    public static KernelContext CreateCuda(CudaInstructionSet? instructionSet, KernelShape? shape = null)
    {
        var context = Context.Create(builder =>
        {
            builder.EnableAlgorithms().Optimize(OptimizationLevel.O2);
            if (instructionSet is { } isa)
                builder.Cuda(device => device.InstructionSet = isa);
            else
                builder.Cuda();
        });
        try
        {
            var devices = context.GetCudaDevices();
            if (devices.Count == 0)
                throw new AcceleratorUnavailableException("KernelContext: CUDA was requested but no CUDA device was found (is the NVIDIA driver installed?).");
            var accelerator = devices[0].CreateAccelerator(context);
            return new KernelContext(context, accelerator, shape ?? KernelShape.Gpu);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The profiler charging launches to ops, or null (the default): see <see cref="KernelProfiler"/>.</summary>
    public KernelProfiler? Profiler { get; internal set; }

    /// <summary>Launcher calls on this context so far (each op's launcher runs one kernel, a few run two or three):
    /// the number the report divides by steps to give launches per step.</summary>
    public long Launches { get; private set; }

    /// <summary>Every launcher calls this before launching; counts the launch, and costs nothing more unless a profiler is attached.</summary>
    internal void Enter(string op)
    {
        Launches++;
        Profiler?.Enter(op);
    }

    /// <summary>Waits until every launched kernel has finished.</summary>
    public void Synchronize() => Accelerator.Synchronize();

    /// <summary>Disposes the accelerator (and with it the loaded kernels) and the context.</summary>
    public void Dispose()
    {
        Accelerator.Dispose();
        Context.Dispose();
    }

    /// <summary>The launcher of op <typeparamref name="TOp"/>, created by <paramref name="create"/> on first use: the one
    /// op table, so adding an op is one property here and nothing else. Thread-safe; a launcher may ask for another
    /// while it is being created (Linear hands over to LinearBlocked).</summary>
    TOp Op<TOp>(Func<KernelContext, TOp> create) where TOp : class
    {
        lock (ops)
        {
            if (ops.TryGetValue(typeof(TOp), out var existing))
                return (TOp)existing;
            var created = create(this);
            ops[typeof(TOp)] = created;
            return created;
        }
    }

    /// <summary>Run length that splits <paramref name="count"/> items over <see cref="ParallelThreads"/>: long runs on the
    /// CPU, one item per thread on a GPU (coalesced). See <see cref="ThreadRun"/>.</summary>
    int RunLength(long count) =>
        Shape == KernelShape.Gpu ? 1 : (int)Math.Max(1, (count + ParallelThreads - 1) / ParallelThreads);

    /// <summary>Launch configuration of a barrier-free kernel over <paramref name="count"/> items (elements, rows or
    /// register blocks), each thread taking a <see cref="ThreadRun"/> of <paramref name="perThread"/> consecutive ones:
    /// the one convention for splitting work over threads.</summary>
    internal KernelConfig RunConfig(long count, out int perThread)
    {
        perThread = RunLength(count);
        return FlatConfig((count + perThread - 1) / perThread);
    }

    /// <summary>Launch configuration of a row op with a kernel of each shape: CPU-shaped, a <see cref="ThreadRun"/> of
    /// <paramref name="rowsPerThread"/> rows per thread; GPU-shaped, one group per row (<paramref name="rowsPerThread"/> = 1)
    /// with <paramref name="sharedFloatsPerThread"/>·<see cref="GroupSize"/> floats of shared memory for its reductions.</summary>
    internal KernelConfig RowConfig(int rows, out int rowsPerThread, int sharedFloatsPerThread = 1)
    {
        rowsPerThread = 1;
        return Shape == KernelShape.Cpu
            ? RunConfig(rows, out rowsPerThread)
            : new KernelConfig(rows, GroupSize, SharedMemoryConfig.RequestDynamic<float>(sharedFloatsPerThread * GroupSize));
    }

    /// <summary>Launch configuration of a one-dimensional, barrier-free kernel with <paramref name="threads"/> threads.</summary>
    internal KernelConfig FlatConfig(long threads)
    {
        int group = Shape == KernelShape.Gpu ? GroupSize : 1;
        long groups = (threads + group - 1) / group;
        if (groups > int.MaxValue)
            throw new KernelShapeException($"KernelContext: {threads} threads exceed the launch limit.");
        return new KernelConfig((int)Math.Max(1, groups), group);
    }
}
