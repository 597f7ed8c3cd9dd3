using System.Globalization;
using System.Text;
using System.Text.Json;
using HalfMsg.Broker.Core;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// GET_CONSUME_STATS (208): what `mqadmin consumerProgress` asks each broker.
internal sealed partial class RemotingDispatcher
{
    /// <summary>
    /// ConsumeStats of a pull group: per queue the broker's max offset and the group's committed offset. The body is
    /// fastjson's encoding of <c>HashMap&lt;MessageQueue, OffsetWrapper&gt;</c>, whose keys are JSON objects
    /// (<c>{{"brokerName":..,"queueId":..,"topic":..}:{...}}</c>): not standard JSON, but what Java's decoder expects.
    /// </summary>
    private RemotingCommand GetConsumeStats(RemotingCommand request)
    {
        string? group = request.Get("consumerGroup");
        if (string.IsNullOrEmpty(group)) return Missing(request, "consumerGroup");
        string? onlyTopic = request.Get("topic");
        var sb = new StringBuilder("{\"consumeTps\":0.0,\"offsetTable\":{");
        bool first = true;
        // The group's offsets in one pass: until 2026-12-05 every committed offset of every group was scanned once per topic.
        foreach (var (topic, queueId, consumed, maxOffset) in Engine.ConsumerProgressOf(group))
        {
            if (!string.IsNullOrEmpty(onlyTopic) && topic != onlyTopic) continue;
            if (!first) sb.Append(',');
            first = false;
            sb.Append("{\"brokerName\":").Append(JsonSerializer.Serialize(Options.BrokerName))
                .Append(",\"queueId\":").Append(queueId.ToString(CultureInfo.InvariantCulture))
                .Append(",\"topic\":").Append(JsonSerializer.Serialize(topic)).Append("}:")
                .Append("{\"brokerOffset\":").Append(maxOffset.ToString(CultureInfo.InvariantCulture))
                .Append(",\"consumerOffset\":").Append(consumed.ToString(CultureInfo.InvariantCulture))
                .Append(",\"lastTimestamp\":0,\"pullOffset\":").Append(consumed.ToString(CultureInfo.InvariantCulture)).Append('}');
        }
        sb.Append("}}");
        var response = Ok(request);
        response.Body = Encoding.UTF8.GetBytes(sb.ToString());
        return response;
    }
}
