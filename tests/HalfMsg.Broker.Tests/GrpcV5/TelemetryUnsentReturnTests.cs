namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// What a <see cref="HalfMsg.Broker.FrontEnds.GrpcV5.TelemetrySession"/> ended for not reading gives back: every check
/// it accepted and never wrote, once, whether still in its queue or taken out by the writer just as it met the stop;
/// never the check of the write under way (it may have reached the client), and nothing stays charged.
/// </summary>
public sealed class TelemetryUnsentReturnTests
{
    /// <summary>A peer whose writes wait until the test opens its window (or the write is cancelled).</summary>
    private sealed class GatedWriter : Grpc.Core.IServerStreamWriter<Apache.Rocketmq.V2.TelemetryCommand>
    {
        private readonly TaskCompletionSource _window = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource FirstWriteStarted = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly System.Collections.Concurrent.ConcurrentQueue<string> Written = new();
        public Grpc.Core.WriteOptions? WriteOptions { get; set; }
        public Task WriteAsync(Apache.Rocketmq.V2.TelemetryCommand message) => WriteAsync(message, CancellationToken.None);

        public async Task WriteAsync(Apache.Rocketmq.V2.TelemetryCommand message, CancellationToken ct)
        {
            FirstWriteStarted.TrySetResult();
            await _window.Task.WaitAsync(ct).ConfigureAwait(false);
            Written.Enqueue(message.RecoverOrphanedTransactionCommand?.TransactionId ?? "");
        }

        public void OpenWindow() => _window.TrySetResult();
    }

    private static Core.Model.CheckBackRequest Check(int i) => new()
    {
        TransactionId = "tx" + i,
        ProducerGroup = "T",
        CheckNumber = 1,
        HalfMessage = new Core.Model.StoredMessage { Topic = "T", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = new byte[256 * 1024] },
    };

    [Theory]
    [InlineData(false)] // the write under way never finishes: stopped past the grace, the stream to be reset
    [InlineData(true)]  // it finishes: the writer takes the next check, meets the stop, and leaves it unwritten
    public async Task A_session_ended_for_not_reading_gives_back_each_check_it_never_wrote_once(bool writeFinishes)
    {
        var connection = new FrontEnds.GrpcV5.AnswerBudget(4 * 1024 * 1024);
        var returned = new TaskCompletionSource<(string ClientId, IReadOnlyList<Core.Model.CheckBackRequest> Checks)>(TaskCreationOptions.RunContinuationsAsynchronously);
        int calls = 0;
        var session = new FrontEnds.GrpcV5.TelemetrySession("c1", 2 * 1024 * 1024, connection)
        {
            ReturnUnsent = (id, checks) =>
            {
                Interlocked.Increment(ref calls);
                returned.TrySetResult((id, checks));
                return Task.CompletedTask;
            },
        };
        var stream = new GatedWriter();
        Task writer = session.RunWriterAsync(stream, CancellationToken.None);
        Assert.True(session.TrySendCheck(Check(0)));
        await stream.FirstWriteStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var accepted = new List<string>();
        for (int i = 1; session.IsAlive; i++)
        {
            if (session.TrySendCheck(Check(i))) accepted.Add("tx" + i);
        }
        Assert.True(accepted.Count >= 2);
        Assert.Contains("did not read", session.EndReason);

        if (writeFinishes) stream.OpenWindow();
        session.Close(); // as the handler's finally does
        Assert.Equal(writeFinishes, await session.WhenWriterDoneAsync(TimeSpan.FromMinutes(5), TimeProvider.System));

        var (clientId, checks) = await returned.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("c1", clientId);
        // Every accepted check but the one in the write under way, in order; that one written or not, never given back.
        Assert.Equal(accepted, checks.Select(c => c.TransactionId));
        Assert.Equal(writeFinishes ? ["tx0"] : [], stream.Written.ToArray());
        Assert.Equal(0, connection.Held);
        Assert.Equal(0, session.QueuedBytes);
        Assert.True(writer.IsCompleted);
        Assert.Equal(1, Volatile.Read(ref calls));
        Assert.False(session.TrySendCheck(Check(999))); // nothing is queued after the writer stopped
    }
}
