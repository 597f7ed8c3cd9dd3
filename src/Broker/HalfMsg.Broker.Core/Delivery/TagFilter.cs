namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// RocketMQ tag expressions: <c>*</c> (or empty) matches everything; <c>TagA || TagB</c> matches those tags.
/// A message without a tag matches only <c>*</c>.
/// </summary>
public sealed class TagFilter
{
    public static readonly TagFilter All = new(null);
    private readonly HashSet<string>? _tags;

    private TagFilter(HashSet<string>? tags) => _tags = tags;

    public bool MatchesAll => _tags is null;

    public bool Matches(string? tag) => _tags is null || (tag is not null && _tags.Contains(tag));

    /// <summary>Whether <paramref name="other"/> matches exactly the tags this one does.</summary>
    internal bool SameAs(TagFilter? other)
        => ReferenceEquals(this, other) || (other is not null && _tags is not null && other._tags is not null && _tags.SetEquals(other._tags));

    public static bool TryParse(string? expression, out TagFilter filter, out string? error)
    {
        error = null;
        filter = All;
        if (string.IsNullOrWhiteSpace(expression) || expression.Trim() == "*") return true;
        var tags = new HashSet<string>(StringComparer.Ordinal);
        foreach (var part in expression.Split("||"))
        {
            var t = part.Trim();
            if (t.Length == 0) { error = $"tag expression '{expression}' has an empty tag"; return false; }
            if (t == "*") return true;
            tags.Add(t);
        }
        filter = new TagFilter(tags);
        return true;
    }
}
