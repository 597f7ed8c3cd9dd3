namespace HalfMsg.Cli;

/// <summary>What a script can branch on. Printed by <c>halfmsg --help</c>.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>The broker answered with an error not covered below (400, 5xx), or the answer was not understood.</summary>
    public const int Failed = 1;
    /// <summary>The command line is wrong (unknown command or option, missing argument).</summary>
    public const int Usage = 2;
    /// <summary>The transaction, group or topic does not exist (404).</summary>
    public const int NotFound = 3;
    /// <summary>The request conflicts with the current state, e.g. rollback after commit (409). Nothing changed.</summary>
    public const int Conflict = 4;
    /// <summary>The broker refused the credentials or the request (401, 403, host not allowed).</summary>
    public const int Refused = 5;
    /// <summary>The broker could not be reached (connection refused, timeout).</summary>
    public const int Unreachable = 6;

    public const string Help = "exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 conflict, 5 refused (credentials), 6 broker unreachable";
}
