using FASTER.core;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>What a <see cref="FaultInjectionDevice"/> does with the next writes.</summary>
internal enum DeviceFault
{
    /// <summary>Writes go to the real device.</summary>
    None,
    /// <summary>Writes complete at once with EIO (error code 5), as a failing disk or a full file system would.</summary>
    FailWrites,
    /// <summary>Writes never complete (a hung device, or FASTER's commit stalling).</summary>
    HangWrites,
    /// <summary>Writes wait, not started, until <see cref="FaultInjectionDevice.ReleaseHeldWrites"/> (a device that stalls
    /// and comes back; lets a test end what the stall left spinning).</summary>
    HoldWrites,
}

/// <summary>
/// A log device that passes everything to the real one until a test switches <see cref="Fault"/>. Wired in through
/// <c>CoreOptions.WrapLogDevice</c>, so the whole path is real: FasterLog sees the failed or missing completion exactly
/// as it would from the disk.
/// </summary>
internal sealed class FaultInjectionDevice(IDevice inner) : IDevice
{
    private const uint EIO = 5;
    private volatile DeviceFault _fault;

    public DeviceFault Fault { get => _fault; set => _fault = value; }
    /// <summary>Writes that were failed or swallowed.</summary>
    public int FaultedWrites;

    public uint SectorSize => inner.SectorSize;
    public string FileName => inner.FileName;
    public long Capacity => inner.Capacity;
    public long SegmentSize => inner.SegmentSize;
    public int StartSegment => inner.StartSegment;
    public int EndSegment => inner.EndSegment;
    public int ThrottleLimit { get => inner.ThrottleLimit; set => inner.ThrottleLimit = value; }

    public void Initialize(long segmentSize, LightEpoch? epoch = null, bool omitSegmentIdFromFilename = false)
        => inner.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
    public bool TryComplete() => inner.TryComplete();
    public bool Throttle() => inner.Throttle();

    public void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context)
    {
        // The closure only while a fault is set: a healthy write allocates nothing here.
        if (_fault != DeviceFault.None && Intercept(callback, context, () => inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context))) return;
        inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context);
        HoldReturn();
    }

    public void WriteAsync(IntPtr alignedSourceAddress, ulong alignedDestinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context)
    {
        // The closure only while a fault is set: a healthy write allocates nothing here.
        if (_fault != DeviceFault.None && Intercept(callback, context, () => inner.WriteAsync(alignedSourceAddress, alignedDestinationAddress, numBytesToWrite, callback, context))) return;
        inner.WriteAsync(alignedSourceAddress, alignedDestinationAddress, numBytesToWrite, callback, context);
        HoldReturn();
    }

    /// <summary>
    /// While set, a write returns to its caller only once this is true (or after 10 s): the write's completion runs
    /// meanwhile on another thread, so FasterLog's caller sees a commit finish before its own call returns, as it does
    /// when that thread is descheduled at the wrong moment.
    /// </summary>
    public Func<bool>? WriteReturnsOnceTrue;

    private void HoldReturn()
    {
        if (WriteReturnsOnceTrue is not { } condition) return;
        var until = Environment.TickCount64 + 10_000;
        while (!condition() && Environment.TickCount64 < until) Thread.Sleep(1);
    }

    private readonly System.Collections.Concurrent.ConcurrentQueue<Action> _heldWrites = new();

    /// <summary>Ends <see cref="DeviceFault.HoldWrites"/>: later writes go to the device, and the held ones are started
    /// now, in the order they came.</summary>
    public void ReleaseHeldWrites()
    {
        _fault = DeviceFault.None;
        while (_heldWrites.TryDequeue(out var write)) write();
    }

    private bool Intercept(DeviceIOCompletionCallback callback, object context, Action write)
    {
        switch (_fault)
        {
            case DeviceFault.HoldWrites:
                Interlocked.Increment(ref FaultedWrites);
                _heldWrites.Enqueue(write);
                // Released in between: nobody may be left to start it.
                if (_fault != DeviceFault.HoldWrites) while (_heldWrites.TryDequeue(out var held)) held();
                return true;
            case DeviceFault.FailWrites:
                Interlocked.Increment(ref FaultedWrites);
                // Completed on another thread, as real I/O completions are.
                ThreadPool.UnsafeQueueUserWorkItem(_ => callback(EIO, 0, context), null);
                return true;
            case DeviceFault.HangWrites:
                Interlocked.Increment(ref FaultedWrites);
                return true;
            default:
                return false;
        }
    }

    /// <summary>Reads passed to the real device.</summary>
    public int Reads;
    /// <summary>While set and not completed, reads wait for it before they go to the real device (a slow disk).</summary>
    public Task? ReadsWaitFor;
    /// <summary>Reads that waited for <see cref="ReadsWaitFor"/>.</summary>
    public int HeldReads;

    public void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context)
    {
        Interlocked.Increment(ref Reads);
        if (Hold(() => inner.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context))) return;
        inner.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);
    }

    public void ReadAsync(ulong alignedSourceAddress, IntPtr alignedDestinationAddress, uint aligned_read_length, DeviceIOCompletionCallback callback, object context)
    {
        Interlocked.Increment(ref Reads);
        if (Hold(() => inner.ReadAsync(alignedSourceAddress, alignedDestinationAddress, aligned_read_length, callback, context))) return;
        inner.ReadAsync(alignedSourceAddress, alignedDestinationAddress, aligned_read_length, callback, context);
    }

    private bool Hold(Action read)
    {
        if (Volatile.Read(ref ReadsWaitFor) is not { IsCompleted: false } gate) return false;
        Interlocked.Increment(ref HeldReads);
        gate.ContinueWith(_ => read(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        return true;
    }
    public void TruncateUntilAddressAsync(long toAddress, AsyncCallback callback, IAsyncResult result) => inner.TruncateUntilAddressAsync(toAddress, callback, result);
    public void TruncateUntilAddress(long toAddress) => inner.TruncateUntilAddress(toAddress);
    public void TruncateUntilSegmentAsync(int toSegment, AsyncCallback callback, IAsyncResult result) => inner.TruncateUntilSegmentAsync(toSegment, callback, result);
    public void TruncateUntilSegment(int toSegment) => inner.TruncateUntilSegment(toSegment);
    public void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result) => inner.RemoveSegmentAsync(segment, callback, result);
    public void RemoveSegment(int segment) => inner.RemoveSegment(segment);
    public long GetFileSize(int segment) => inner.GetFileSize(segment);
    public void Reset() => inner.Reset();
    /// <summary>
    /// While set, <see cref="Dispose"/> blocks until it is reset: what closing the log did after writes had failed on a
    /// read-only file system (measured: the old broker then never finished its shutdown).
    /// </summary>
    public ManualResetEventSlim? BlockDispose { get; set; }

    public void Dispose()
    {
        BlockDispose?.Wait();
        inner.Dispose();
    }
}
