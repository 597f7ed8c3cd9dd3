// halfmsg: the HalfMsgBroker admin command line. See HalfMsgCli for commands and exit codes.
return await HalfMsg.Cli.HalfMsgCli.RunAsync(args, Console.Out, Console.Error);
