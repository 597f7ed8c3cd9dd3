using System.Globalization;

namespace HalfMsg.Protocol.Remoting;

/// <summary>Header encoding of a Remoting frame: the high byte of the frame's second int32.</summary>
public enum SerializeType : byte
{
    Json = 0,
    RocketMq = 1,
}

/// <summary>
/// One Remoting command (request or response). The "custom header" of each request code travels as
/// <see cref="ExtFields"/>, string to string, exactly as Java's <c>RemotingCommand.extFields</c>.
/// </summary>
public sealed class RemotingCommand
{
    /// <summary>flag bit 0: this is a response.</summary>
    public const int ResponseFlag = 1;
    /// <summary>flag bit 1: a one-way request, never answered.</summary>
    public const int OnewayFlag = 2;

    public int Code { get; set; }
    public byte Language { get; set; } = LanguageCode.Java;
    /// <summary>MQVersion ordinal of the sender (e.g. 121 = V3_4_9, 401 = V4_9_4).</summary>
    public int Version { get; set; }
    public int Opaque { get; set; }
    public int Flag { get; set; }
    public string? Remark { get; set; }
    public Dictionary<string, string>? ExtFields { get; set; }
    public ReadOnlyMemory<byte> Body { get; set; }
    /// <summary>How the header was (or will be) encoded.</summary>
    public SerializeType SerializeType { get; set; } = SerializeType.Json;

    public bool IsResponse => (Flag & ResponseFlag) != 0;
    public bool IsOneway => (Flag & OnewayFlag) != 0;

    public static RemotingCommand Request(int code, Dictionary<string, string>? ext = null, ReadOnlyMemory<byte> body = default)
        => new() { Code = code, ExtFields = ext, Body = body };

    /// <summary>A response to <paramref name="request"/>: same opaque, response flag, the request's header encoding.</summary>
    public static RemotingCommand ResponseTo(RemotingCommand request, int code, string? remark = null)
        => new()
        {
            Code = code, Opaque = request.Opaque, Flag = ResponseFlag, Remark = remark, Version = request.Version,
            Language = LanguageCode.Java, SerializeType = request.SerializeType, ExtFields = new Dictionary<string, string>(),
        };

    public string? Get(string key) => ExtFields is not null && ExtFields.TryGetValue(key, out var v) ? v : null;

    /// <summary>The value of the first key present (V2 one-letter names and V1 names are accepted alike).</summary>
    public string? Get(string key, string alternative) => Get(key) ?? Get(alternative);

    public bool TryGetInt(string key, out int value) => int.TryParse(Get(key), NumberStyles.Integer, CultureInfo.InvariantCulture, out value);

    public bool TryGetLong(string key, out long value) => long.TryParse(Get(key), NumberStyles.Integer, CultureInfo.InvariantCulture, out value);

    public int GetInt(string key, int fallback) => TryGetInt(key, out var v) ? v : fallback;

    public long GetLong(string key, long fallback) => TryGetLong(key, out var v) ? v : fallback;

    public bool GetBool(string key, bool fallback)
        => Get(key) is { } v ? v.Equals("true", StringComparison.OrdinalIgnoreCase) : fallback;

    public RemotingCommand Set(string key, string? value)
    {
        if (value is null) return this;
        (ExtFields ??= new Dictionary<string, string>())[key] = value;
        return this;
    }

    public RemotingCommand Set(string key, long value) => Set(key, value.ToString(CultureInfo.InvariantCulture));

    public RemotingCommand Set(string key, bool value) => Set(key, value ? "true" : "false");

    public override string ToString() => $"RemotingCommand(code={Code}, opaque={Opaque}, flag={Flag}, remark={Remark}, ext={ExtFields?.Count ?? 0}, body={Body.Length})";
}
