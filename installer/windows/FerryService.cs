// Ferry agent service host for Windows. install.ps1 compiles it with Add-Type into
// ferry-service.exe (the .NET Framework C# compiler that ships with Windows), because node.exe
// cannot talk to the Service Control Manager itself. It runs
//   runtime\node.exe dist\cli\main.js agent run --config <config>
// from the install folder, appends the agent's output to <logDir>\agent.log (rotated at 10 MiB),
// and exits with a failure code when the agent dies, so the SCM recovery actions restart it.
using System;
using System.Diagnostics;
using System.IO;
using System.ServiceProcess;
using System.Text;

namespace Ferry
{
    public sealed class AgentService : ServiceBase
    {
        private const long MaxLogBytes = 10L * 1024 * 1024;
        private readonly string installDir;
        private readonly string configFile;
        private readonly string logDir;
        private readonly object logLock = new object();
        private Process agent;
        private volatile bool stopping;

        public AgentService(string installDir, string configFile, string logDir)
        {
            ServiceName = "FerryAgent";
            CanStop = true;
            CanShutdown = true;
            AutoLog = true;
            this.installDir = installDir;
            this.configFile = configFile;
            this.logDir = logDir;
        }

        protected override void OnStart(string[] args)
        {
            Directory.CreateDirectory(logDir);
            var info = new ProcessStartInfo
            {
                FileName = Path.Combine(installDir, "runtime", "node.exe"),
                Arguments = Quote(Path.Combine(installDir, "dist", "cli", "main.js")) + " agent run --config " + Quote(configFile),
                WorkingDirectory = installDir,
                UseShellExecute = false,
                CreateNoWindow = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            info.EnvironmentVariables["FERRY_LOG_LEVEL"] = "info";
            agent = new Process { StartInfo = info, EnableRaisingEvents = true };
            agent.OutputDataReceived += (sender, e) => Log(e.Data);
            agent.ErrorDataReceived += (sender, e) => Log(e.Data);
            agent.Exited += OnAgentExited;
            agent.Start();
            agent.BeginOutputReadLine();
            agent.BeginErrorReadLine();
            Log("service host: agent started, pid " + agent.Id);
        }

        private void OnAgentExited(object sender, EventArgs e)
        {
            if (stopping) return;
            int code = agent.ExitCode;
            Log("service host: agent exited with code " + code);
            EventLog.WriteEntry("Ferry agent exited unexpectedly with code " + code + "; see " + Path.Combine(logDir, "agent.log"), EventLogEntryType.Error);
            // A non-zero exit without a stop request makes the SCM apply the recovery actions.
            ExitCode = code == 0 ? 1 : code;
            Environment.Exit(ExitCode);
        }

        protected override void OnStop()
        {
            stopping = true;
            StopAgent();
        }

        protected override void OnShutdown()
        {
            stopping = true;
            StopAgent();
        }

        private void StopAgent()
        {
            if (agent == null || agent.HasExited) return;
            // The agent is crash-safe (records are freed only after the receiver acknowledged
            // them durably), so ending it is safe; give it a moment to finish a write first.
            try
            {
                agent.Kill();
                agent.WaitForExit(30000);
            }
            catch (InvalidOperationException)
            {
                // already gone
            }
            Log("service host: agent stopped");
        }

        private void Log(string line)
        {
            if (line == null) return;
            lock (logLock)
            {
                string file = Path.Combine(logDir, "agent.log");
                try
                {
                    var fileInfo = new FileInfo(file);
                    if (fileInfo.Exists && fileInfo.Length > MaxLogBytes)
                    {
                        string old = file + ".1";
                        if (File.Exists(old)) File.Delete(old);
                        File.Move(file, old);
                    }
                    File.AppendAllText(file, line + Environment.NewLine, Encoding.UTF8);
                }
                catch (IOException)
                {
                    // Logging must never stop the agent.
                }
            }
        }

        private static string Quote(string s)
        {
            return "\"" + s.Replace("\"", "\\\"") + "\"";
        }

        public static int Main(string[] args)
        {
            // ferry-service.exe <installDir> <configFile> <logDir>
            if (args.Length != 3)
            {
                Console.Error.WriteLine("usage: ferry-service.exe INSTALL_DIR CONFIG_FILE LOG_DIR (run by the Service Control Manager)");
                return 2;
            }
            ServiceBase.Run(new AgentService(args[0], args[1], args[2]));
            return 0;
        }
    }
}
