using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using HalfMsg.ClientCore;
using HalfMsg.ProducerClient;

namespace HalfMsg.Reliability.Tests.Edge;

/// <summary>A fact that runs only as root where a tmpfs can be mounted (the disk-full test fills a small one).</summary>
public sealed class TmpfsFactAttribute : FactAttribute
{
    private static readonly Lazy<string?> Unavailable = new(Probe);

    public TmpfsFactAttribute()
    {
        if (Unavailable.Value is { } why) Skip = "needs root and mount -t tmpfs (the data dir must be a small file system to fill): " + why;
    }

    private static string? Probe()
    {
        if (!OperatingSystem.IsLinux()) return "not Linux";
        if (Environment.UserName != "root") return "not root";
        try
        {
            using var fs = Tmpfs.Mount(1);
            File.WriteAllText(Path.Combine(fs.Path, "x"), "x");
            return null;
        }
        catch (Exception ex)
        {
            return ex.Message;
        }
    }
}

/// <summary>A tmpfs of a given size on a fresh temp dir; unmounted and removed on dispose.</summary>
public sealed class Tmpfs : IDisposable
{
    private Tmpfs(string path) => Path = path;

    public string Path { get; }

    public static Tmpfs Mount(int sizeMiB)
    {
        string dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "halfmsg-tmpfs-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        var (code, output) = Run("mount", "-t", "tmpfs", "-o", $"size={sizeMiB}m", "tmpfs", dir);
        if (code != 0)
        {
            Directory.Delete(dir);
            throw new InvalidOperationException($"mount -t tmpfs failed ({code}): {output.Trim()}");
        }
        return new Tmpfs(dir);
    }

    public void Dispose()
    {
        if (Run("umount", Path).Code != 0) Run("umount", "-l", Path);
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static (int Code, string Output) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit(30_000);
        return (p.ExitCode, output);
    }
}

/// <summary>The admin port as the tests read it, and what /proc says about the broker process.</summary>
internal static class Admin
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    public static async Task<(int Status, JsonElement Body)> GetJsonAsync(string url)
    {
        using var response = await Http.GetAsync(url);
        string text = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(text);
        return ((int)response.StatusCode, doc.RootElement.Clone());
    }

    public static async Task<string> GetTextAsync(string url) => await Http.GetStringAsync(url);

    /// <summary>A gauge's value in the Prometheus text (the first series of that name).</summary>
    public static double? Metric(string prometheusText, string name)
    {
        foreach (var line in prometheusText.Split('\n'))
        {
            if (!line.StartsWith(name, StringComparison.Ordinal)) continue;
            string rest = line[name.Length..];
            if (rest.Length == 0 || (rest[0] != ' ' && rest[0] != '{')) continue;
            string value = line[(line.LastIndexOf(' ') + 1)..];
            if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)) return v;
        }
        return null;
    }

    /// <summary>Resident set size of a process (VmRSS), bytes.</summary>
    public static long RssBytes(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        return -1;
    }

    public static async Task WaitForAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (await condition()) return;
            await Task.Delay(100);
        }
        Assert.Fail($"timed out after {timeout.TotalSeconds:0} s waiting for {what}");
    }
}

internal static class Stats
{
    /// <summary>The p-quantile (0..1) by nearest rank; 0 for no samples.</summary>
    public static double Percentile(IReadOnlyList<double> values, double p)
    {
        if (values.Count == 0) return 0;
        var sorted = values.Order().ToArray();
        int rank = (int)Math.Ceiling(p * sorted.Length) - 1;
        return sorted[Math.Clamp(rank, 0, sorted.Length - 1)];
    }

    /// <summary>Least-squares slope of y over x.</summary>
    public static double Slope(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        int n = x.Count;
        if (n < 2) return 0;
        double mx = x.Average(), my = y.Average();
        double sxy = 0, sxx = 0;
        for (int i = 0; i < n; i++) { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) * (x[i] - mx); }
        return sxx == 0 ? 0 : sxy / sxx;
    }

    /// <summary>
    /// Theil-Sen slope of y over x: the median of the slopes between every pair of points. Linear growth gives the same
    /// slope as least squares, but one transient sample (a stall that briefly piles up pending halves, a GC) moves only
    /// the few pairs that contain it, where it can swing a least-squares slope over a short run on its own.
    /// </summary>
    public static double RobustSlope(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        var slopes = new List<double>(x.Count * (x.Count - 1) / 2);
        for (int i = 0; i < x.Count; i++)
            for (int j = i + 1; j < x.Count; j++)
                if (x[j] != x[i]) slopes.Add((y[j] - y[i]) / (x[j] - x[i]));
        if (slopes.Count == 0) return 0;
        slopes.Sort();
        int mid = slopes.Count / 2;
        return slopes.Count % 2 == 1 ? slopes[mid] : (slopes[mid - 1] + slopes[mid]) / 2;
    }
}

/// <summary>A transaction checker for load drivers: commits what the driver meant to commit, rolls back the rest.</summary>
internal sealed class IntentChecker : ITransactionChecker
{
    public System.Collections.Concurrent.ConcurrentDictionary<string, bool> CommitIntent { get; } = new();

    public ValueTask<TransactionResolution> CheckAsync(MessageView message, CancellationToken cancellationToken)
        => ValueTask.FromResult(message.Keys.Count > 0 && CommitIntent.TryGetValue(message.Keys[0], out bool commit) && commit
            ? TransactionResolution.Commit : TransactionResolution.Rollback);
}

internal static class Exceptions
{
    public static bool IsBusy(Exception ex) => ex is TooManyRequestsException;
}
