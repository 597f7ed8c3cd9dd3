namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Bytes of the log's room held for an append that has not happened yet (<see cref="RecordLog.ReserveRoomAsync"/>).
/// Dispose it once, right after the append (the tail then counts the bytes itself).
/// </summary>
public readonly struct RoomReservation : IDisposable
{
    private readonly RecordLog? _log;

    internal RoomReservation(RecordLog log, long bytes)
    {
        _log = bytes > 0 ? log : null;
        Bytes = bytes;
    }

    /// <summary>The bytes held (at most <see cref="RecordLog.MaxReservationBytes"/>).</summary>
    public long Bytes { get; }

    public void Dispose() => _log?.ReleaseRoom(Bytes);
}
