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
        foreach (var topic in Engine.ListTopics())
        {
            if (!string.IsNullOrEmpty(onlyTopic) && topic.Name != onlyTopic) continue;
            if (!Engine.ConsumerOffsetsOf(topic.Name).TryGetValue(group, out var offsets)) continue;
            foreach (var q in topic.Queues)
            {
                if (!offsets.TryGetValue(q.QueueId, out long consumed)) continue;
                if (!first) sb.Append(',');
                first = false;
                sb.Append("{\"brokerName\":").Append(JsonSerializer.Serialize(Options.BrokerName))
                    .Append(",\"queueId\":").Append(q.QueueId.ToString(CultureInfo.InvariantCulture))
                    .Append(",\"topic\":").Append(JsonSerializer.Serialize(topic.Name)).Append("}:")
                    .Append("{\"brokerOffset\":").Append(q.MaxOffset.ToString(CultureInfo.InvariantCulture))
                    .Append(",\"consumerOffset\":").Append(consumed.ToString(CultureInfo.InvariantCulture))
                    .Append(",\"lastTimestamp\":0,\"pullOffset\":").Append(consumed.ToString(CultureInfo.InvariantCulture)).Append('}');
            }
        }
        sb.Append("}}");
        var response = Ok(request);
        response.Body = Encoding.UTF8.GetBytes(sb.ToString());
        return response;
    }
}
