# HalfMsgBroker container: the broker plus the halfmsg CLI (used by the health check).
#   docker build -t halfmsg-broker .
#   docker run -p 8081:8081 -p 8080:8080 -v halfmsg-data:/data -e Broker__Credentials__ops=change-me halfmsg-broker
# Inside the container every port binds 0.0.0.0 (docker's port mapping decides who reaches it), so set credentials:
# without them the admin port (commit / roll back any transaction) is open to whoever reaches 8080.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY . .
RUN dotnet publish src/Broker/HalfMsg.Broker -c Release -o /out/broker \
 && dotnet publish src/Cli/HalfMsg.Cli -c Release -o /out/cli

FROM mcr.microsoft.com/dotnet/aspnet:10.0
WORKDIR /app
COPY --from=build /out/broker ./
COPY --from=build /out/cli ./cli/
# The image's non-root user; /data is the volume for the log and checkpoints.
RUN mkdir -p /data && chown app:app /data
USER app
VOLUME /data
EXPOSE 8081 10911 8080
# The health check's halfmsg takes the admin port's address and TLS settings from the environment (HALFMSG_URL, here
# plain HTTP on loopback). With --tls-client-auth require (-e Broker__TlsClientAuth=require -e Broker__TlsClientCa=...)
# the admin port takes only HTTPS with a client certificate, so give the probe one as well:
#   -e HALFMSG_URL=https://127.0.0.1:8080 -e HALFMSG_CLIENT_CERTIFICATE=/certs/probe.pfx
#   -e HALFMSG_ADMIN_CA=/data/tls/self-signed.pfx   (or the CA of your --grpc-tls-certificate)
ENV HALFMSG_URL=http://127.0.0.1:8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s \
  CMD ["dotnet", "/app/cli/halfmsg.dll", "health"]
# docker stop sends SIGTERM: the broker writes a checkpoint before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dotnet", "HalfMsg.Broker.dll", "--data-dir", "/data", "--bind", "0.0.0.0", "--admin-bind", "0.0.0.0", "--log-format", "json"]
