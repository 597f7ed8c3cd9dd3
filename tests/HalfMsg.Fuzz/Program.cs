// Fuzz targets are added per parser; see tests/HalfMsg.Fuzz/README.md once written.
Console.Error.WriteLine("usage: HalfMsg.Fuzz <target>");
return 2;
