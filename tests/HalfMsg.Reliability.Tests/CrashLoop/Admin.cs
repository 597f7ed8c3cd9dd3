using System.Globalization;
using System.Text.Json;
using HalfMsg.TestKit;

namespace HalfMsg.Reliability.Tests.CrashLoop;

/// <summary>The broker's admin API as the crash loop reads it.</summary>
internal sealed class Admin(BrokerProcess broker)
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    public async Task<JsonElement> GetAsync(string path, CancellationToken ct = default)
    {
        using var response = await Http.GetAsync($"http://127.0.0.1:{broker.HttpPort}{path}", ct);
        string text = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode) throw new HttpRequestException($"GET {path}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>A GET's status and body as text, whatever the status (for failure reports).</summary>
    public async Task<string> RawAsync(string path, CancellationToken ct = default)
    {
        try
        {
            using var response = await Http.GetAsync($"http://127.0.0.1:{broker.HttpPort}{path}", ct);
            return $"GET {path}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(ct)}";
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return $"GET {path}: {ex.GetType().Name} {ex.Message}";
        }
    }

    /// <summary>Every pending and parked half: message id and transaction id to (checks, parked).</summary>
    public async Task<Dictionary<string, (int Checks, bool Parked, string TransactionId)>> PendingAsync(CancellationToken ct = default)
    {
        var result = new Dictionary<string, (int, bool, string)>();
        foreach (string kind in new[] { "pending", "parked" })
        {
            long? after = null;
            while (true)
            {
                string query = kind == "pending" ? "?limit=1000" + (after is { } a ? "&after=" + a.ToString(CultureInfo.InvariantCulture) : "") : "";
                var page = await GetAsync($"/api/transactions/{kind}{query}", ct);
                var items = page.GetProperty("items");
                foreach (var t in items.EnumerateArray())
                {
                    var value = (t.GetProperty("checks").GetInt32(), t.GetProperty("parked").GetBoolean(), t.GetProperty("transactionId").GetString()!);
                    result[t.GetProperty("messageId").GetString()!] = value;
                    result[value.Item3] = value;
                }
                if (kind == "parked" || items.GetArrayLength() < 1000) break;
                after = page.GetProperty("next").GetInt64();
            }
        }
        return result;
    }

    public async Task<long> StatAsync(string name, CancellationToken ct = default)
        => (await GetAsync("/api/stats", ct)).GetProperty(name).GetInt64();

    /// <summary>Messages of <paramref name="group"/> that retention expired before it finished them (all topics).</summary>
    public async Task<long> ExpiredAsync(string group, CancellationToken ct = default)
    {
        try
        {
            var g = await GetAsync($"/api/groups/{group}", ct);
            long total = 0;
            foreach (var t in g.GetProperty("topics").EnumerateArray()) total += t.GetProperty("expired").GetInt64();
            return total;
        }
        catch (HttpRequestException)
        {
            return 0;
        }
    }

    /// <summary>/health as (status, reasons).</summary>
    public async Task<(string Status, List<string> Reasons)> HealthAsync(CancellationToken ct = default)
    {
        var h = await GetAsync("/health", ct);
        var reasons = h.TryGetProperty("reasons", out var r) ? r.EnumerateArray().Select(x => x.GetString()!).ToList() : [];
        return (h.GetProperty("status").GetString()!, reasons);
    }

    public async Task<string> MetricsAsync(CancellationToken ct = default)
    {
        using var response = await Http.GetAsync($"http://127.0.0.1:{broker.HttpPort}/metrics", ct);
        return await response.Content.ReadAsStringAsync(ct);
    }
}
