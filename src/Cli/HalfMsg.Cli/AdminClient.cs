using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace HalfMsg.Cli;

/// <summary>The admin API over HTTP, with the same Basic credentials the API and dashboard take.</summary>
internal sealed class AdminClient(HttpClient http)
{
    public sealed record Answer(HttpStatusCode Status, JsonElement Body)
    {
        public bool Ok => (int)Status is >= 200 and < 300;
        /// <summary>The broker's message index was still being rebuilt after a start (X-HalfMsg-Index-Warming): a key
        /// look-up's list may be partial.</summary>
        public bool IndexWarming { get; init; }
        public string Error => Body.ValueKind == JsonValueKind.Object && Body.TryGetProperty("error", out var e) ? e.GetString() ?? "" : $"HTTP {(int)Status}";

        public int ExitCode => Status switch
        {
            _ when Ok => ExitCodes.Ok,
            HttpStatusCode.NotFound => ExitCodes.NotFound,
            HttpStatusCode.Conflict => ExitCodes.Conflict,
            HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => ExitCodes.Refused,
            HttpStatusCode.BadRequest when Body.ValueKind == JsonValueKind.Object && Body.TryGetProperty("code", out var c) && c.GetString() == "HostNotAllowed" => ExitCodes.Refused,
            _ => ExitCodes.Failed,
        };
    }

    public static AdminClient Create(Uri baseAddress, string? accessKey, string? secret, HttpMessageHandler? handler = null)
    {
        var http = handler is null ? new HttpClient() : new HttpClient(handler, disposeHandler: false);
        http.BaseAddress = baseAddress;
        http.Timeout = TimeSpan.FromSeconds(30);
        if (!string.IsNullOrEmpty(accessKey))
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{accessKey}:{secret}")));
        return new AdminClient(http);
    }

    public Task<Answer> GetAsync(string path, CancellationToken ct) => SendAsync(HttpMethod.Get, path, ct);

    public Task<Answer> PostAsync(string path, CancellationToken ct) => SendAsync(HttpMethod.Post, path, ct);

    private async Task<Answer> SendAsync(HttpMethod method, string path, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path);
        using var response = await http.SendAsync(request, ct).ConfigureAwait(false);
        string text = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
        JsonElement body;
        try
        {
            body = text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone();
        }
        catch (JsonException)
        {
            body = JsonDocument.Parse(JsonSerializer.Serialize(new { error = $"HTTP {(int)response.StatusCode}: not a JSON answer (is --url the admin port?)" })).RootElement.Clone();
        }
        return new Answer(response.StatusCode, body)
        {
            IndexWarming = response.Headers.TryGetValues("X-HalfMsg-Index-Warming", out var warming) && warming.Contains("true", StringComparer.OrdinalIgnoreCase),
        };
    }
}
