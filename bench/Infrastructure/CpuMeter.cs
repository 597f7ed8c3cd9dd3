using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace HalfMsg.Bench.Infrastructure;

/// <summary>
/// CPU time of processes (user + system, from <c>/proc/&lt;pid&gt;/stat</c>; this process also via
/// <see cref="Process.TotalProcessorTime"/>) and the machine's load average, for "CPU ms per transaction" columns.
/// </summary>
public static partial class CpuMeter
{
    /// <summary>user+system CPU seconds of <paramref name="pid"/> so far (null if unreadable, e.g. gone).</summary>
    public static double? ProcessSeconds(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // after "pid (comm) ": state is f[0]; utime is field 14 overall => f[11], stime f[12]
            return (long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture)) / (double)ClockTicks;
        }
        catch (Exception) { return null; }
    }

    /// <summary>user+system CPU seconds of this (the bench) process: producers, consumers, in-process ceiling.</summary>
    public static double SelfSeconds()
    {
        using var p = Process.GetCurrentProcess();
        return p.TotalProcessorTime.TotalSeconds;
    }

    /// <summary>Voluntary and involuntary context switches of every thread of <paramref name="pid"/> so far.</summary>
    public static long? ContextSwitches(int pid)
    {
        try
        {
            long total = 0;
            foreach (string task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                try
                {
                    foreach (string line in File.ReadLines(Path.Combine(task, "status")))
                    {
                        if (line.StartsWith("voluntary_ctxt_switches:", StringComparison.Ordinal) || line.StartsWith("nonvoluntary_ctxt_switches:", StringComparison.Ordinal))
                            total += long.Parse(line[(line.IndexOf(':') + 1)..].Trim(), CultureInfo.InvariantCulture);
                    }
                }
                catch (IOException) { /* the thread ended meanwhile */ }
            }
            return total;
        }
        catch (Exception) { return null; }
    }

    /// <summary>1-minute load average (null off Linux).</summary>
    public static double? LoadAverage1()
    {
        try { return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture); }
        catch (Exception) { return null; }
    }

    /// <summary>"1m 5m 15m" load averages as /proc/loadavg says.</summary>
    public static string LoadAverages()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (Exception) { return "?"; }
    }

    /// <summary>Machine-wide busy CPU seconds (all cores, from /proc/stat), to see how much of the 2 cores others used.</summary>
    public static double? MachineBusySeconds()
    {
        try
        {
            var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // cpu user nice system idle iowait irq softirq steal ...
            long busy = 0;
            for (int i = 1; i < f.Length && i <= 8; i++)
                if (i != 4 && i != 5) busy += long.Parse(f[i], CultureInfo.InvariantCulture);
            return busy / (double)ClockTicks;
        }
        catch (Exception) { return null; }
    }

    private static readonly long ClockTicks = GetClockTicks();

    [LibraryImport("libc", EntryPoint = "sysconf")]
    private static partial long SysConf(int name);

    private static long GetClockTicks()
    {
        try { long t = SysConf(2 /* _SC_CLK_TCK */); return t > 0 ? t : 100; }
        catch (Exception) { return 100; }
    }
}

/// <summary>CPU of this process, a server process and the whole machine over one measured window.</summary>
public sealed class CpuWindow
{
    private readonly int? _serverPid;
    private readonly double _self0;
    private readonly double? _server0;
    private readonly double? _machine0;
    private readonly long _t0 = Stopwatch.GetTimestamp();

    public CpuWindow(int? serverPid)
    {
        _serverPid = serverPid;
        _self0 = CpuMeter.SelfSeconds();
        _server0 = serverPid is int p ? CpuMeter.ProcessSeconds(p) : null;
        _machine0 = CpuMeter.MachineBusySeconds();
    }

    /// <summary>Adds <c>{prefix}server_cpu_s</c>, <c>…_ms_per_tx</c>, <c>client_cpu_*</c>, <c>others_cpu_cores</c> (machine
    /// CPU used by neither process, in cores: the noise from everything else on the machine) for <paramref name="units"/>
    /// transactions or messages.</summary>
    public void Stop(Dictionary<string, double> metrics, string serverKey, long units)
    {
        double wall = (Stopwatch.GetTimestamp() - _t0) / (double)Stopwatch.Frequency;
        double self = CpuMeter.SelfSeconds() - _self0;
        double? server = _serverPid is int p && _server0 is double s0 && CpuMeter.ProcessSeconds(p) is double s1 ? s1 - s0 : null;
        metrics["client_cpu_s"] = self;
        if (units > 0) metrics["client_cpu_ms_per_tx"] = self * 1000 / units;
        if (server is double sv)
        {
            metrics[$"{serverKey}_cpu_s"] = sv;
            if (units > 0) metrics[$"{serverKey}_cpu_ms_per_tx"] = sv * 1000 / units;
        }
        if (wall > 0)
        {
            metrics["client_cpu_cores"] = self / wall;
            if (server is double sv2) metrics[$"{serverKey}_cpu_cores"] = sv2 / wall;
            if (_machine0 is double m0 && CpuMeter.MachineBusySeconds() is double m1)
            {
                metrics["machine_cpu_cores"] = (m1 - m0) / wall;
                metrics["others_cpu_cores"] = Math.Max(0, (m1 - m0 - self - (server ?? 0)) / wall);
            }
        }
        if (CpuMeter.LoadAverage1() is double la) metrics["loadavg_1m_end"] = la;
    }
}
