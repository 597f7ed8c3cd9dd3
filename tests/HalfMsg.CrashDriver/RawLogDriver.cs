using System.Buffers.Binary;
using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

/// <summary>
/// <c>rawlog DIR [truncate]</c>: the broker's storage class alone (<see cref="RecordLog"/>, flush sync), 4 writers
/// appending 1 KiB records that carry their sequence number, printing <c>D seq address</c> only once the record is
/// durable. With <c>truncate</c>, the log's begin address moves every 500 records (<c>T addr</c> printed before,
/// <c>TD addr</c> once a later commit made the cut durable), so
/// commits whose metadata FASTER must write (forced) happen during the load. Used by the commit-manager crash test.
/// </summary>
static class RawLogDriver
{
    public static async Task<int> RunAsync(string dir, bool truncate)
    {
        var output = new StreamWriter(Console.OpenStandardOutput(), Encoding.ASCII) { AutoFlush = true };
        var gate = new object();
        void Emit(string line) { lock (gate) output.WriteLine(line); }
        var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 20, memorySizeBits: 24);
        Emit("READY");
        long next = 0;
        var recent = new Queue<long>();
        var writers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            var record = new byte[1024];
            long cutToConfirm = -1;
            while (true)
            {
                long seq = Interlocked.Increment(ref next);
                BinaryPrimitives.WriteInt64LittleEndian(record, seq);
                BinaryPrimitives.WriteInt64LittleEndian(record.AsSpan(8), seq * 31 + 7);
                await log.WaitForRoomAsync();
                long address = log.Append(record);
                await log.WaitDurableAsync(address);
                Emit($"D {seq} {address}");
                if (cutToConfirm >= 0)
                {
                    // This record was appended after the cut, so the commit that made it durable persisted the cut.
                    Emit($"TD {cutToConfirm}");
                    cutToConfirm = -1;
                }
                if (!truncate) continue;
                long? cut = null;
                lock (recent)
                {
                    recent.Enqueue(address);
                    if (recent.Count > 1000) cut = recent.Dequeue();
                    if (seq % 500 != 0) cut = null;
                }
                if (cut is long c && c > log.BeginAddress)
                {
                    Emit($"T {c}");
                    log.TruncateUntil(c);
                    cutToConfirm = c;
                }
            }
        })).ToList();
        await Task.WhenAll(writers);
        return 1;
    }
}
