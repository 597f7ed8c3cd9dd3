using System.Runtime.InteropServices;

namespace HalfMsg.Bench.Reporting;

public sealed record MachineInfo(string Host, int Cores, string Os, string CpuModel, string DotNet, string MemoryTotal, string Disk)
{
    public static MachineInfo Collect(string? dataDir = null) => new(
        Environment.MachineName,
        Environment.ProcessorCount,
        RuntimeInformation.OSDescription,
        ReadCpuModel(),
        RuntimeInformation.FrameworkDescription,
        MemTotal(),
        DiskOf(dataDir ?? Path.GetTempPath()));

    private static string ReadCpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (line is not null) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (Exception) { /* not Linux */ }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    private static string MemTotal()
    {
        try
        {
            var line = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
            if (line is not null && long.TryParse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], out long kb))
                return $"{kb / 1024.0 / 1024.0:0.0} GiB";
        }
        catch (Exception) { /* not Linux */ }
        return "?";
    }

    private static string DiskOf(string path)
    {
        try
        {
            // Longest mount point that prefixes the path: "device fstype".
            string full = Path.GetFullPath(path);
            string best = "", desc = "?";
            foreach (var l in File.ReadLines("/proc/mounts"))
            {
                var f = l.Split(' ');
                if (f.Length < 3) continue;
                string mp = f[1];
                if ((full == mp || full.StartsWith(mp.TrimEnd('/') + "/", StringComparison.Ordinal)) && mp.Length >= best.Length)
                {
                    best = mp;
                    desc = $"{f[2]} on {mp} ({f[0]})";
                }
            }
            return desc;
        }
        catch (Exception) { return "?"; }
    }

    public override string ToString() => $"{Cores} cores, {CpuModel}, {MemoryTotal}, {Os}, {DotNet}, temp dir {Disk}";
}
