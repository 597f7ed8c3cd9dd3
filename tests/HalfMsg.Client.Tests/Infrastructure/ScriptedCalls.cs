using Endpoint = HalfMsg.ClientCore.Transport.Endpoint;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// A stand-in for one unary RPC, for the producer's call coalescers: records each request (with its endpoint) and
/// answers it when the test releases it. Calls are numbered from 0 in arrival order.
/// </summary>
internal sealed class ScriptedCalls<TRequest, TResponse>
{
    private static readonly TimeSpan Within = TimeSpan.FromSeconds(30);

    private readonly object _gate = new();
    private readonly List<(Endpoint Endpoint, TRequest Request, TaskCompletionSource<TResponse> Answer)> _calls = [];
    private readonly SemaphoreSlim _arrived = new(0);

    public Task<TResponse> Call(Endpoint endpoint, TRequest request, CancellationToken ct)
    {
        var answer = new TaskCompletionSource<TResponse>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            _calls.Add((endpoint, request, answer));
        }

        _arrived.Release();
        return answer.Task;
    }

    /// <summary>Waits for the next call to arrive and returns the request of the latest one still open.</summary>
    public async Task<TRequest> NextAsync()
    {
        Assert.True(await _arrived.WaitAsync(Within), $"no {typeof(TRequest).Name} call arrived");
        lock (_gate)
        {
            return _calls.Count(c => !c.Answer.Task.IsCompleted) switch
            {
                0 => throw new InvalidOperationException("no open call"),
                _ => _calls.Last(c => !c.Answer.Task.IsCompleted).Request,
            };
        }
    }

    public int Count
    {
        get { lock (_gate) return _calls.Count; }
    }

    /// <summary>The endpoint call <paramref name="call"/> was made to.</summary>
    public Endpoint EndpointOf(int call) => Get(call).Endpoint;

    /// <summary>The request of call <paramref name="call"/>.</summary>
    public TRequest RequestOf(int call) => Get(call).Request;

    public void Answer(int call, Func<TRequest, TResponse> answer)
    {
        (_, TRequest request, TaskCompletionSource<TResponse> tcs) = Get(call);
        tcs.SetResult(answer(request));
    }

    public void Fail(int call, Exception ex) => Get(call).Answer.SetException(ex);

    private (Endpoint Endpoint, TRequest Request, TaskCompletionSource<TResponse> Answer) Get(int call)
    {
        lock (_gate)
        {
            return _calls[call];
        }
    }
}
