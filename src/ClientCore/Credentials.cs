namespace HalfMsg.ClientCore;

/// <summary>
/// An access key pair. When configured, every call carries an <c>authorization</c> header: the HMAC-SHA1 of the
/// <c>x-mq-date-time</c> header under <see cref="AccessSecret"/>, as RocketMQ 5 ACL expects.
/// </summary>
/// <param name="AccessKey">The access key (sent in clear as the credential).</param>
/// <param name="AccessSecret">The secret used to sign; never sent.</param>
public sealed record Credentials(string AccessKey, string AccessSecret)
{
    /// <summary>Hides the secret.</summary>
    public override string ToString() => $"Credentials {{ AccessKey = {AccessKey} }}";
}
