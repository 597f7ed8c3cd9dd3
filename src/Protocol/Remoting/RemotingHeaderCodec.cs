using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace HalfMsg.Protocol.Remoting;

/// <summary>The two header encodings of a Remoting frame: fastjson-style JSON and RocketMQ's binary layout.</summary>
public static class RemotingHeaderCodec
{
    /// <summary>Ext fields and remarks larger than this are refused (the frame cap already bounds them; this bounds a map).</summary>
    private const int MaxExtFields = 4096;

    // ------------------------------------------------------------------ JSON

    /// <summary>
    /// Decodes a JSON header: <c>code</c>, <c>language</c> (name or number), <c>version</c>, <c>opaque</c>, <c>flag</c>,
    /// <c>remark</c>, <c>extFields</c>. Unknown keys are ignored (Java adds <c>serializeTypeCurrentRPC</c>). ext field
    /// values may be JSON numbers or booleans (ali-ons keeps JS types); they are kept as their JSON text.
    /// </summary>
    public static RemotingCommand DecodeJson(ReadOnlySequence<byte> header)
    {
        var cmd = new RemotingCommand();
        var reader = new Utf8JsonReader(header, new JsonReaderOptions { MaxDepth = 4 });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) RemotingProtocolException.Throw("JSON header is not an object");
            bool sawCode = false;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                string name = reader.GetString()!;
                if (!reader.Read()) break;
                switch (name)
                {
                    case "code": cmd.Code = ReadInt(ref reader, name); sawCode = true; break;
                    case "version": cmd.Version = ReadInt(ref reader, name); break;
                    case "opaque": cmd.Opaque = ReadInt(ref reader, name); break;
                    case "flag": cmd.Flag = ReadInt(ref reader, name); break;
                    case "language":
                        cmd.Language = reader.TokenType switch
                        {
                            JsonTokenType.String => LanguageCode.CodeOf(reader.GetString()),
                            // TryGetInt32: GetInt32 throws FormatException on 1e99 or 3.5.
                            JsonTokenType.Number => reader.TryGetInt32(out int lang) ? (byte)Math.Clamp(lang, 0, 255) : LanguageCode.Other,
                            _ => LanguageCode.Other,
                        };
                        break;
                    case "remark": cmd.Remark = reader.TokenType == JsonTokenType.Null ? null : ScalarText(ref reader, name); break;
                    case "extFields":
                        if (reader.TokenType == JsonTokenType.Null) break;
                        if (reader.TokenType != JsonTokenType.StartObject) RemotingProtocolException.Throw("extFields is not an object");
                        var ext = new Dictionary<string, string>(StringComparer.Ordinal);
                        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                        {
                            string key = reader.GetString()!;
                            reader.Read();
                            if (reader.TokenType != JsonTokenType.Null) ext[key] = ScalarText(ref reader, key);
                            if (ext.Count > MaxExtFields) RemotingProtocolException.Throw("too many extFields");
                        }
                        if (reader.TokenType != JsonTokenType.EndObject) RemotingProtocolException.Throw("extFields is not closed");
                        cmd.ExtFields = ext;
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }
            if (reader.TokenType != JsonTokenType.EndObject) RemotingProtocolException.Throw("JSON header is not closed");
            if (!sawCode) RemotingProtocolException.Throw("JSON header has no code");
        }
        catch (JsonException ex)
        {
            RemotingProtocolException.Throw("JSON header is not valid JSON: " + ex.Message);
        }
        catch (InvalidOperationException ex)
        {
            // Utf8JsonReader.GetString on a name or value that is not valid UTF-8 (found by fuzzing, issue 13).
            RemotingProtocolException.Throw("JSON header is not valid UTF-8: " + ex.Message);
        }
        return cmd;
    }

    private static int ReadInt(ref Utf8JsonReader reader, string name)
    {
        if (reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out int v)) return v;
        if (reader.TokenType == JsonTokenType.String && int.TryParse(reader.GetString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out v)) return v;
        RemotingProtocolException.Throw($"header field '{name}' is not a 32-bit integer");
        return 0;
    }

    private static string ScalarText(ref Utf8JsonReader reader, string name)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.String: return reader.GetString()!;
            case JsonTokenType.True: return "true";
            case JsonTokenType.False: return "false";
            case JsonTokenType.Number:
                return Encoding.UTF8.GetString(reader.HasValueSequence ? reader.ValueSequence.ToArray() : reader.ValueSpan);
            default:
                RemotingProtocolException.Throw($"header field '{name}' is not a string, number or boolean");
                return "";
        }
    }

    /// <summary>Writes the header as Java's fastjson does (strict JSON; ali-ons parses it with JSON.parse).</summary>
    public static void EncodeJson(IBufferWriter<byte> output, RemotingCommand cmd)
    {
        using var w = new Utf8JsonWriter(output);
        w.WriteStartObject();
        w.WriteNumber("code"u8, cmd.Code);
        if (cmd.ExtFields is { Count: > 0 } ext)
        {
            w.WriteStartObject("extFields"u8);
            foreach (var (k, v) in ext) w.WriteString(k, v);
            w.WriteEndObject();
        }
        w.WriteNumber("flag"u8, cmd.Flag);
        w.WriteString("language"u8, LanguageCode.NameOf(cmd.Language));
        w.WriteNumber("opaque"u8, cmd.Opaque);
        if (cmd.Remark is not null) w.WriteString("remark"u8, cmd.Remark);
        w.WriteString("serializeTypeCurrentRPC"u8, "JSON"u8);
        w.WriteNumber("version"u8, cmd.Version);
        w.WriteEndObject();
    }

    // ------------------------------------------------------------------ ROCKETMQ binary

    /// <summary>
    /// Decodes a ROCKETMQ binary header (<c>RocketMQSerializable.rocketMQProtocolDecode</c>):
    /// <code>
    /// i16 code | u8 language | i16 version | i32 opaque | i32 flag
    /// i32 remarkLength | remark UTF-8            (0 = null)
    /// i32 extLength    | { i16 keyLength | key | i32 valueLength | value }*  until extLength bytes are consumed
    /// </code>
    /// </summary>
    public static RemotingCommand DecodeBinary(ReadOnlySequence<byte> header)
    {
        byte[] bytes = header.ToArray();
        var span = new ReadOnlySpan<byte>(bytes);
        int pos = 0;
        if (span.Length < 13 + 4 + 4) RemotingProtocolException.Throw($"binary header of {span.Length} bytes is shorter than its 21 fixed bytes");
        var cmd = new RemotingCommand
        {
            Code = BinaryPrimitives.ReadInt16BigEndian(span),
            Language = span[2],
            Version = BinaryPrimitives.ReadInt16BigEndian(span[3..]),
            Opaque = BinaryPrimitives.ReadInt32BigEndian(span[5..]),
            Flag = BinaryPrimitives.ReadInt32BigEndian(span[9..]),
        };
        pos = 13;
        int remarkLength = BinaryPrimitives.ReadInt32BigEndian(span[pos..]);
        pos += 4;
        if (remarkLength < 0 || remarkLength > span.Length - pos) RemotingProtocolException.Throw($"remark length {remarkLength} exceeds the header");
        if (remarkLength > 0) cmd.Remark = Encoding.UTF8.GetString(span.Slice(pos, remarkLength));
        pos += remarkLength;
        if (span.Length - pos < 4) RemotingProtocolException.Throw("binary header is truncated before the ext fields length");
        int extLength = BinaryPrimitives.ReadInt32BigEndian(span[pos..]);
        pos += 4;
        if (extLength < 0 || extLength > span.Length - pos) RemotingProtocolException.Throw($"ext fields length {extLength} exceeds the header");
        if (extLength > 0)
        {
            var ext = new Dictionary<string, string>(StringComparer.Ordinal);
            int end = pos + extLength;
            while (pos < end)
            {
                if (end - pos < 2) RemotingProtocolException.Throw("ext field key length is truncated");
                int keyLength = BinaryPrimitives.ReadInt16BigEndian(span[pos..]);
                pos += 2;
                if (keyLength < 0 || keyLength > end - pos) RemotingProtocolException.Throw($"ext field key length {keyLength} exceeds the ext fields");
                string key = Encoding.UTF8.GetString(span.Slice(pos, keyLength));
                pos += keyLength;
                if (end - pos < 4) RemotingProtocolException.Throw("ext field value length is truncated");
                int valueLength = BinaryPrimitives.ReadInt32BigEndian(span[pos..]);
                pos += 4;
                if (valueLength < 0 || valueLength > end - pos) RemotingProtocolException.Throw($"ext field value length {valueLength} exceeds the ext fields");
                ext[key] = Encoding.UTF8.GetString(span.Slice(pos, valueLength));
                pos += valueLength;
                if (ext.Count > MaxExtFields) RemotingProtocolException.Throw("too many extFields");
            }
            cmd.ExtFields = ext;
        }
        return cmd;
    }

    /// <summary>Writes the ROCKETMQ binary header (layout in <see cref="DecodeBinary"/>). Null remark = length 0.</summary>
    public static void EncodeBinary(IBufferWriter<byte> output, RemotingCommand cmd)
    {
        var fixedPart = output.GetSpan(13);
        BinaryPrimitives.WriteInt16BigEndian(fixedPart, (short)cmd.Code);
        fixedPart[2] = cmd.Language;
        BinaryPrimitives.WriteInt16BigEndian(fixedPart[3..], (short)cmd.Version);
        BinaryPrimitives.WriteInt32BigEndian(fixedPart[5..], cmd.Opaque);
        BinaryPrimitives.WriteInt32BigEndian(fixedPart[9..], cmd.Flag);
        output.Advance(13);
        WriteString32(output, string.IsNullOrEmpty(cmd.Remark) ? null : cmd.Remark);
        int extLength = 0;
        if (cmd.ExtFields is not null)
            foreach (var (k, v) in cmd.ExtFields) extLength += 2 + Encoding.UTF8.GetByteCount(k) + 4 + Encoding.UTF8.GetByteCount(v);
        var len = output.GetSpan(4);
        BinaryPrimitives.WriteInt32BigEndian(len, extLength);
        output.Advance(4);
        if (cmd.ExtFields is null) return;
        foreach (var (k, v) in cmd.ExtFields)
        {
            var kl = output.GetSpan(2);
            BinaryPrimitives.WriteInt16BigEndian(kl, (short)Encoding.UTF8.GetByteCount(k));
            output.Advance(2);
            output.Advance(Encoding.UTF8.GetBytes(k, output.GetSpan(Encoding.UTF8.GetMaxByteCount(k.Length))));
            WriteString32(output, v);
        }
    }

    private static void WriteString32(IBufferWriter<byte> output, string? value)
    {
        int n = value is null ? 0 : Encoding.UTF8.GetByteCount(value);
        var len = output.GetSpan(4);
        BinaryPrimitives.WriteInt32BigEndian(len, n);
        output.Advance(4);
        if (n > 0) output.Advance(Encoding.UTF8.GetBytes(value!, output.GetSpan(n)));
    }
}
