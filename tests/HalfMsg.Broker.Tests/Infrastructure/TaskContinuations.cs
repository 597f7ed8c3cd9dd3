using System.Reflection;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>
/// Counts the continuations registered on a task that has not completed (awaiters, Task.WhenAny promises, WaitAsync
/// promises): what it keeps alive until it completes. Counting them is exact where measuring retained bytes on a busy
/// machine is not. Reads the runtime's private field; a runtime that renames it fails the test loudly, not silently.
/// </summary>
public static class TaskContinuations
{
    private static readonly FieldInfo? Field = typeof(Task).GetField("m_continuationObject", BindingFlags.Instance | BindingFlags.NonPublic);

    public static int Count(Task task)
    {
        Assert.True(Field is not null, "System.Threading.Tasks.Task has no m_continuationObject field on this runtime: update TaskContinuations");
        Assert.False(task.IsCompleted, "a completed task holds no continuations: count them on one that has not completed");
        return Field.GetValue(task) switch
        {
            null => 0,
            System.Collections.IList list => list.Cast<object?>().Count(o => o is not null),
            _ => 1,
        };
    }
}
