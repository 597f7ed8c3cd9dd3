using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// RocketMQ 4 ACL: AccessKey + Signature ext fields on every request when credentials are configured.
internal sealed partial class RemotingDispatcher
{
    private bool Authenticate(RemotingCommand request, out RemotingCommand? denied)
    {
        denied = null;
        if (Options.Credentials.Count == 0) return true;
        string? accessKey = request.Get(RemotingAclSignature.AccessKeyField);
        string? signature = request.Get(RemotingAclSignature.SignatureField);
        if (string.IsNullOrEmpty(accessKey) || string.IsNullOrEmpty(signature))
        {
            denied = Error(request, ResponseCode.NoPermission, "No accessKey is configured or the request is not signed");
            return false;
        }
        if (!Options.Credentials.TryGetValue(accessKey, out var secret) || !RemotingAclSignature.Verify(request, secret))
        {
            denied = Error(request, ResponseCode.NoPermission, $"Check signature failed for accessKey={accessKey}");
            return false;
        }
        return true;
    }
}
