using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Protocol.Tests;

/// <summary>The method paths tests and tools use agree with the service that Grpc.Tools generates from our protos.</summary>
public sealed class GrpcMethodTests
{
    [Fact]
    public void Every_messaging_service_method_has_a_distinct_path()
    {
        Assert.Equal(17, GrpcMethods.All.Count);
        Assert.Equal(17, GrpcMethods.All.Distinct().Count());
        Assert.All(GrpcMethods.All, p => Assert.StartsWith("/apache.rocketmq.v2.MessagingService/", p));
        Assert.Equal("/apache.rocketmq.v2.MessagingService/EndTransaction", GrpcMethods.EndTransaction);
    }

    [Fact]
    public void Every_method_path_names_an_rpc_of_the_proto_service()
    {
        var service = Apache.Rocketmq.V2.ServiceReflection.Descriptor.FindTypeByName<Google.Protobuf.Reflection.ServiceDescriptor>("MessagingService");
        var fromProto = service.Methods.Select(m => $"/{service.FullName}/{m.Name}").ToHashSet();

        Assert.Equal(fromProto, GrpcMethods.All.ToHashSet());
    }

    [Fact]
    public void The_generated_client_and_server_stubs_use_the_same_paths()
    {
        Assert.Equal(GrpcMethods.ServiceName, Apache.Rocketmq.V2.MessagingService.Descriptor.FullName);
        Assert.Equal(GrpcMethods.All.Count, Apache.Rocketmq.V2.MessagingService.Descriptor.Methods.Count);
    }
}
