using System.Diagnostics.CodeAnalysis;
using System.IO.Compression;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Identifiers;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>Between <c>apache.rocketmq.v2.Message</c> and the core's message model.</summary>
internal static class V5MessageConverter
{
    /// <summary>
    /// Builds the core's draft from a published message. The body is stored uncompressed: the Java client gzips bodies
    /// over 4 KiB (body_encoding GZIP), so inflate here and deliver IDENTITY to everybody.
    /// </summary>
    /// <param name="message">The published message.</param>
    /// <param name="ns">The caller's namespace (<see cref="V5Namespace"/>; "" for none).</param>
    /// <param name="maxBodySize">Largest body, after inflating.</param>
    /// <param name="inflateBudget">Bytes the rest of this request may still inflate to; decreased by what this body
    /// inflates to. A request of many small gzip bombs is capped as a whole, not per message.</param>
    /// <param name="draft">The draft, when valid.</param>
    /// <param name="invalid">The status to answer with, when not.</param>
    public static bool TryToDraft(Message message, string ns, int maxBodySize, ref long inflateBudget, [NotNullWhen(true)] out MessageDraft? draft,
        [NotNullWhen(false)] out Status? invalid)
    {
        draft = null;
        SystemProperties? sp = message.SystemProperties;
        if (sp is null || string.IsNullOrEmpty(sp.MessageId))
        {
            invalid = V5Status.Of(Code.IllegalMessageId, "system_properties.message_id is required");
            return false;
        }

        if (V5MessageChecks.TypeRefusal(sp) is { } unsupported)
        {
            invalid = unsupported;
            return false;
        }

        // Reserved property names, control characters, blank tags and keys, long groups: refused as the proxy does,
        // before the body is inflated.
        if (V5MessageChecks.Refusal(message) is { } refused)
        {
            invalid = refused;
            return false;
        }

        if (!V5Time.TryToUnixMilliseconds(sp.DeliveryTimestamp, out long? deliveryMs))
        {
            invalid = V5Status.Of(Code.IllegalDeliveryTime, "system_properties.delivery_timestamp is not a valid timestamp");
            return false;
        }

        if (!V5Time.TryToUnixMilliseconds(sp.BornTimestamp, out long? bornMs))
        {
            invalid = V5Status.Of(Code.BadRequest, "system_properties.born_timestamp is not a valid timestamp");
            return false;
        }

        ReadOnlyMemory<byte> body = message.Body.Memory;
        if (sp.BodyEncoding == Encoding.Gzip)
        {
            try
            {
                body = Inflate(message.Body, (int)Math.Min(maxBodySize, Math.Max(inflateBudget, 0)));
                inflateBudget -= body.Length;
            }
            catch (InvalidOperationException)
            {
                invalid = inflateBudget < maxBodySize
                    ? V5Status.Of(Code.MessageBodyTooLarge, "the request's GZIP bodies inflate to more than the request limit")
                    : V5Status.Of(Code.MessageBodyTooLarge, $"the inflated body exceeds {maxBodySize} bytes");
                return false;
            }
            catch (InvalidDataException)
            {
                invalid = V5Status.Of(Code.MessageCorrupted, "body_encoding is GZIP but the body is not valid gzip, or is cut short");
                return false;
            }
        }

        draft = new MessageDraft
        {
            Topic = V5Namespace.Wrap(ns, message.Topic?.Name ?? string.Empty),
            MessageId = sp.MessageId,
            Tag = sp.HasTag && sp.Tag.Length > 0 ? sp.Tag : null,
            Keys = [.. sp.Keys],
            Properties = message.UserProperties.Count == 0 ? MessageDraft.EmptyProperties : new Dictionary<string, string>(message.UserProperties),
            Body = body,
            BornTimestampMs = bornMs ?? 0,
            BornHost = sp.BornHost.Length > 0 ? sp.BornHost : null,
            MessageGroup = sp.HasMessageGroup && sp.MessageGroup.Length > 0 ? sp.MessageGroup : null,
            DeliveryTimestampMs = deliveryMs,
            // system_properties.queue_id is not read, as the Apache proxy never reads it (SendMessageActivity's queue
            // selector: a message group's hash, else the next queue). The official Node client names queue 0 in every
            // send; keeping it put all its messages on one queue (until the night session of 2026-12-06).
        };
        // A Remoting consumer of the topic gets it in the stored layout, whose properties hold at most 32767 bytes (a
        // half may be checked back by a Remoting producer of its group, which is not known here: the longest is assumed).
        if (Remoting.RemotingMessageConverter.StoredPropertiesRefusal(draft, sp.MessageType == MessageType.Transaction, producerGroup: null) is { } tooLarge)
        {
            draft = null;
            invalid = V5Status.Of(Code.MessagePropertiesTooLarge, tooLarge);
            return false;
        }
        invalid = null;
        return true;
    }

    /// <summary>A delivered message, with everything the official clients need: topic, message id, body digest (a
    /// missing digest is a hard error in Node; MD5, or CRC32 for a client that asked for it, see
    /// <see cref="RocketMqHeaders.AcceptDigest"/>), receipt handle and delivery attempt.</summary>
    public static Message ToMessage(DeliveredMessage delivered, string ns = "", bool crc32Digest = false)
    {
        Message message = ToMessage(delivered.Message, ns, crc32Digest);
        SystemProperties sp = message.SystemProperties;
        sp.ReceiptHandle = delivered.ReceiptHandle;
        sp.DeliveryAttempt = delivered.DeliveryAttempt;
        return message;
    }

    /// <summary>A stored message as a v5 Message (also the payload of a check-back command), its topic as a client in
    /// <paramref name="ns"/> names it.</summary>
    public static Message ToMessage(StoredMessage stored, string ns = "", bool crc32Digest = false)
    {
        var sp = new SystemProperties
        {
            MessageId = stored.MessageId,
            // MD5: the one form every official client verifies; CRC32 only for our own clients, which ask for it.
            BodyDigest = crc32Digest ? BodyDigest.Crc32Of(stored.Body.Span) : BodyDigest.Md5Of(stored.Body.Span),
            BodyEncoding = Encoding.Identity,
            MessageType = stored.Kind switch
            {
                MessageKind.Fifo => MessageType.Fifo,
                MessageKind.Delay => MessageType.Delay,
                MessageKind.Transaction => MessageType.Transaction,
                _ => MessageType.Normal,
            },
            // Read back from the log: a time written before sends were checked may be out of range (UnixTime).
            BornTimestamp = Timestamp.FromDateTimeOffset(UnixTime.ToDateTimeOffset(stored.BornTimestampMs)),
            BornHost = stored.BornHost ?? string.Empty,
            StoreTimestamp = Timestamp.FromDateTimeOffset(UnixTime.ToDateTimeOffset(stored.StoreTimestampMs)),
            QueueId = stored.QueueId,
            QueueOffset = stored.QueueOffset,
            Keys = { stored.Keys },
        };
        if (stored.Tag is not null)
        {
            sp.Tag = stored.Tag;
        }

        if (stored.MessageGroup is not null)
        {
            sp.MessageGroup = stored.MessageGroup;
        }

        if (stored.DeliveryTimestampMs is { } due)
        {
            sp.DeliveryTimestamp = Timestamp.FromDateTimeOffset(UnixTime.ToDateTimeOffset(due));
        }

        if (stored.OriginalTopic is not null)
        {
            sp.DeadLetterQueue = new DeadLetterQueue { Topic = V5Namespace.Name(ns, stored.OriginalTopic), MessageId = stored.MessageId };
        }

        var message = new Message
        {
            Topic = V5Namespace.Resource(ns, stored.Topic),
            SystemProperties = sp,
            // No copy: a StoredMessage's body lies in a fresh array of its own (the record read back, BrokerEngine.ToStoredMessage), never written after.
            Body = UnsafeByteOperations.UnsafeWrap(stored.Body),
        };
        foreach (var (key, value) in stored.Properties)
        {
            message.UserProperties[key] = value;
        }

        return message;
    }

    /// <summary>Inflates at most <paramref name="limit"/> bytes, so a small "gzip bomb" cannot exhaust memory.
    /// <see cref="InvalidDataException"/> when the body is not gzip or is cut short.</summary>
    private static byte[] Inflate(ByteString compressed, int limit)
    {
        using var input = new MemoryStream(compressed.ToByteArray(), writable: false);
        using var gzip = new GZipStream(input, CompressionMode.Decompress);
        using var output = new MemoryStream();
        byte[] chunk = new byte[16 * 1024];
        int read;
        while ((read = gzip.Read(chunk, 0, chunk.Length)) > 0)
        {
            if (output.Length + read > limit)
            {
                throw new InvalidOperationException("inflated body too large");
            }

            output.Write(chunk, 0, read);
        }

        // A body cut short inflates without an error to what it holds: refused (MESSAGE_CORRUPTED), not stored short.
        if (!CompressedBodyTrailer.GzipEnded(compressed.Span, output.GetBuffer().AsSpan(0, (int)output.Length)))
        {
            throw new InvalidDataException("the gzip data is cut short");
        }

        return output.ToArray();
    }
}
