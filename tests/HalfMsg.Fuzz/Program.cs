using HalfMsg.Fuzz;
using SharpFuzz;

// HalfMsg.Fuzz <target>                 afl++ persistent mode (run under afl-fuzz by run-afl.sh)
// HalfMsg.Fuzz <target> <file|dir>...   run each input once without afl (reproduce a finding); exit 1 on a finding
// HalfMsg.Fuzz list                     the targets
// HalfMsg.Fuzz capture <corpus dir>     seed corpora from real traffic against a broker process
// HalfMsg.Fuzz capture-engine <dir>     seeds an engine writes alone: checkpoint chains, every record kind
if (args.Length == 0 || args[0] is "list" or "-h" or "--help")
{
    Console.Error.WriteLine("usage: HalfMsg.Fuzz <target> [input file or directory ...]");
    foreach (var t in FuzzTargets.All) Console.Error.WriteLine($"  {t.Name,-15} {t.Parser}; documented error: {t.DocumentedError}");
    return args.Length == 0 ? 2 : 0;
}

if (args[0] == "capture")
{
    if (args.Length != 2) { Console.Error.WriteLine("usage: HalfMsg.Fuzz capture <corpus dir>"); return 2; }
    return await HalfMsg.Fuzz.Capture.SeedCapture.RunAsync(args[1]);
}

if (args[0] == "capture-engine")
{
    if (args.Length != 2) { Console.Error.WriteLine("usage: HalfMsg.Fuzz capture-engine <corpus dir>"); return 2; }
    return await HalfMsg.Fuzz.Capture.SeedCapture.WriteEngineSeedsAsync(args[1]);
}

var target = FuzzTargets.Find(args[0]);
if (target is null)
{
    Console.Error.WriteLine($"unknown target '{args[0]}'; run 'HalfMsg.Fuzz list'");
    return 2;
}

if (args.Length == 1)
{
    // Persistent mode: one process runs many inputs; an exception escaping Run is a crash for afl.
    Fuzzer.Run(stream =>
    {
        using var ms = new MemoryStream();
        stream.CopyTo(ms);
        target.Run(ms.ToArray());
    });
    return 0;
}

int findings = 0, runs = 0;
foreach (var path in args.Skip(1))
{
    var files = Directory.Exists(path) ? Directory.GetFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray() : [path];
    foreach (var file in files)
    {
        runs++;
        try
        {
            target.Run(File.ReadAllBytes(file));
        }
        catch (Exception ex)
        {
            findings++;
            Console.Error.WriteLine($"{file}: {ex.GetType().Name}: {ex.Message}\n{ex.StackTrace}");
        }
    }
}
Console.WriteLine($"{target.Name}: {runs} inputs, {findings} findings");
return findings == 0 ? 0 : 1;
