<#
.SYNOPSIS
    Installs (or removes) the Ferry protection agent on Windows.

.DESCRIPTION
    Run as Administrator from an unpacked Windows agent package (see installer/README.md):

        .\install.ps1 -Receiver wss://receiver.example:7443 -Fingerprint AB:CD:... `
                      -Volume 'web01-c=C:' -PassphraseFile .\passphrase.txt

    Steps, each undone in reverse order if a later one fails:
      1. copy the package to -InstallDir (default "$env:ProgramFiles\Ferry"), keeping the
         previous version aside until the end (so an upgrade failure restores it);
      2. build the service host ferry-service.exe from FerryService.cs (Add-Type);
      3. install the ferryflt volume filter driver by its INF (driver\ferryflt.inf) when the package
         has it and -Capture is not scan; otherwise (or when pnputil refuses it, e.g. unsigned
         under Secure Boot) fall back to scan capture with a warning;
      4. write the config (JSON) to -ConfigDir (default "$env:ProgramData\Ferry"), readable by
         SYSTEM and Administrators only;
      5. register with the receiver (ferry agent register; passphrase from -PassphraseFile, which
         is deleted afterwards, or typed at a prompt; never on the command line);
      6. create the FerryAgent service (automatic start, restart on failure) and start it.
    The result goes to stdout and, with -ResultFile, into that file as "OK ..." or
    "FAILED: reason" (push-install reads it back over SMB). Exit codes: 0 ok, 2 bad arguments,
    3 not installable here, 5 passphrase refused, 6 receiver unreachable or untrusted, 1 other.

.PARAMETER Uninstall
    Stops and deletes the service, removes the driver package this script installed, the
    install folder, and (unless -KeepState) the config and state folders.
#>
[CmdletBinding()]
param(
    [string]$PackageDir = $PSScriptRoot,
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'Ferry'),
    [string]$ConfigDir = (Join-Path $env:ProgramData 'Ferry'),
    [string]$StateDir = (Join-Path $env:ProgramData 'Ferry\state'),
    [string]$Receiver = '',
    [string]$Fingerprint = '',
    [string]$CaFile = '',
    [string]$PassphraseFile = '',
    [string[]]$Volume = @(),
    [string]$Name = '',
    [ValidateSet('auto', 'kernel', 'scan')]
    [string]$Capture = 'auto',
    [switch]$NoRegister,
    [switch]$NoStart,
    [switch]$Uninstall,
    [switch]$KeepState,
    [switch]$DryRun,
    [string]$ResultFile = '',
    [string]$BootstrapService = ''
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$ServiceName = 'FerryAgent'
$script:Undo = New-Object System.Collections.ArrayList
$script:Committed = $false
$script:Manifest = New-Object System.Collections.ArrayList

# ------------------------------------------------------------------ output, failure, rollback

# Progress goes to the host, not the output stream, so functions can return values.
function Write-Line {
    param([string]$Text)
    Write-Host $Text
}

function Write-Step {
    param([string]$Text)
    Write-Host "==> $Text"
}

function Write-Result {
    param([string]$Text)
    Write-Host "ferry-install: $Text"
    if ($ResultFile -ne '') {
        Set-Content -LiteralPath $ResultFile -Value $Text -Encoding ASCII
    }
}

# Undo actions get their values as arguments (PowerShell script blocks are not closures).
function Add-Undo {
    param([string]$Description, [scriptblock]$Action, [object[]]$Arguments = @())
    [void]$script:Undo.Add(@{ Description = $Description; Action = $Action; Arguments = $Arguments })
}

function Invoke-Rollback {
    if ($script:Undo.Count -eq 0) {
        return
    }
    Write-Line "==> rolling back $($script:Undo.Count) step(s)"
    for ($i = $script:Undo.Count - 1; $i -ge 0; $i--) {
        $entry = $script:Undo[$i]
        Write-Line "    undo: $($entry.Description)"
        try {
            $arguments = $entry.Arguments
            & $entry.Action @arguments
        }
        catch {
            Write-Warning "undo step failed: $($entry.Description): $($_.Exception.Message)"
        }
    }
    $script:Undo.Clear()
}

function Stop-Install {
    param([int]$Code, [string]$Message)
    [Console]::Error.WriteLine("install.ps1: error: $Message")
    if (-not $script:Committed) {
        Invoke-Rollback
    }
    Remove-Passphrase
    Write-Result "FAILED: $Message"
    Remove-Bootstrap
    exit $Code
}

function Invoke-Step {
    param([string]$Description, [scriptblock]$Action)
    if ($DryRun) {
        Write-Line "    [dry-run] $Description"
        return
    }
    Write-Line "    + $Description"
    & $Action
}

function Remove-Passphrase {
    if ($PassphraseFile -ne '' -and $BootstrapService -ne '' -and (Test-Path -LiteralPath $PassphraseFile)) {
        # A pushed passphrase file is single-use: it goes whatever the outcome.
        Remove-Item -LiteralPath $PassphraseFile -Force -ErrorAction SilentlyContinue
    }
}

function Remove-Bootstrap {
    if ($BootstrapService -ne '') {
        # The one-shot service that push-install created to run this script.
        & sc.exe delete $BootstrapService | Out-Null
    }
}

# ------------------------------------------------------------------ checks

function Test-Administrator {
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal($identity)
    return $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}

# The receiver, its trust, the volumes and the name are checked by ferry agent configure
# (Test-Config), from the package, before anything changes.
function Assert-Arguments {
    if ($Receiver -eq '' -and -not (Test-Path -LiteralPath (Join-Path $ConfigDir 'agent.json'))) {
        Stop-Install 2 '-Receiver, -Fingerprint (or -CaFile) and -Volume are required for a first install'
    }
    if ($PassphraseFile -ne '' -and -not (Test-Path -LiteralPath $PassphraseFile -PathType Leaf)) {
        Stop-Install 2 "-PassphraseFile $PassphraseFile does not exist"
    }
}

function Assert-Package {
    foreach ($relative in @('PACKAGE', 'FerryService.cs', 'runtime\node.exe', 'dist\cli\main.js', 'package.json')) {
        if (-not (Test-Path -LiteralPath (Join-Path $PackageDir $relative))) {
            Stop-Install 3 "the Windows agent package in $PackageDir is incomplete: $relative is missing"
        }
    }
}

# ------------------------------------------------------------------ steps

function Install-Files {
    Write-Step "install the agent into $InstallDir"
    $stage = "$InstallDir.new"
    $previous = "$InstallDir.old"
    Invoke-Step "copy $PackageDir to $stage" {
        if (Test-Path -LiteralPath $stage) {
            Remove-Item -LiteralPath $stage -Recurse -Force
        }
        Copy-Item -LiteralPath $PackageDir -Destination $stage -Recurse
        Add-Undo "remove $stage" { param($p) Remove-Item -LiteralPath $p -Recurse -Force -ErrorAction SilentlyContinue } @($stage)
    }
    if (Test-Path -LiteralPath $InstallDir) {
        if (-not (Test-Path -LiteralPath (Join-Path $InstallDir 'PACKAGE'))) {
            Stop-Install 3 "$InstallDir exists and is not a Ferry install; pass another -InstallDir"
        }
        Invoke-Step "move the previous install aside to $previous" {
            Stop-AgentService
            if (Test-Path -LiteralPath $previous) {
                Remove-Item -LiteralPath $previous -Recurse -Force
            }
            Move-Item -LiteralPath $InstallDir -Destination $previous
            Add-Undo "restore the previous install" { param($from, $to) Move-Item -LiteralPath $from -Destination $to } @($previous, $InstallDir)
        }
    }
    Invoke-Step "move $stage to $InstallDir" {
        Move-Item -LiteralPath $stage -Destination $InstallDir
        Add-Undo "remove $InstallDir" { param($from, $to) Move-Item -LiteralPath $from -Destination $to } @($InstallDir, $stage)
    }
    Invoke-Step 'build the service host ferry-service.exe' {
        $source = Get-Content -LiteralPath (Join-Path $InstallDir 'FerryService.cs') -Raw
        Add-Type -TypeDefinition $source -Language CSharp -OutputAssembly (Join-Path $InstallDir 'ferry-service.exe') `
            -OutputType ConsoleApplication -ReferencedAssemblies 'System.ServiceProcess'
    }
}

function Install-Driver {
    Write-Step 'volume filter driver (ferryflt)'
    $inf = Join-Path $PackageDir 'driver\ferryflt.inf'
    if ($Capture -eq 'scan') {
        Write-Line '    scan capture requested: no driver'
        return
    }
    if (-not (Test-Path -LiteralPath $inf)) {
        Use-ScanCapture 'this agent package has no filter driver (driver\ferryflt.inf)'
        return
    }
    if ($DryRun) {
        Write-Line "    [dry-run] pnputil /add-driver $inf /install"
        return
    }
    Write-Line "    + pnputil /add-driver $inf /install"
    $output = & pnputil.exe /add-driver $inf /install 2>&1 | Out-String
    $published = [regex]::Match($output, 'Published Name:\s*(oem\d+\.inf)').Groups[1].Value
    if ($LASTEXITCODE -ne 0 -or $published -eq '') {
        $why = ($output -split "`r?`n" | Where-Object { $_.Trim() -ne '' } | Select-Object -Last 1)
        Use-ScanCapture "pnputil could not install ferryflt ($why; unsigned drivers need test signing or a signed build)"
        return
    }
    Add-Undo "remove driver package $published" { param($oem) & pnputil.exe /delete-driver $oem /uninstall /force | Out-Null } @($published)
    [void]$script:Manifest.Add("driver`t$published")
    Write-Line "    installed as $published; kernel capture starts after the next reboot (scan until then)"
}

function Use-ScanCapture {
    param([string]$Reason)
    if ($Capture -eq 'kernel') {
        Stop-Install 3 "kernel capture was requested but $Reason"
    }
    Write-Warning "$Reason; falling back to scan capture (periodic block comparison, approximate points)"
    $script:Capture = 'scan'
}

function Set-PrivateAcl {
    param([string]$Path)
    # SYSTEM and Administrators only: the config names the receiver, the state holds the credential.
    & icacls.exe $Path /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' | Out-Null
    if ($LASTEXITCODE -ne 0) {
        Stop-Install 1 "cannot restrict access to $Path"
    }
}

function Write-Config {
    Write-Step "configuration in $ConfigDir, state in $StateDir"
    $configFile = Join-Path $ConfigDir 'agent.json'
    foreach ($dir in @($ConfigDir, $StateDir)) {
        if (-not (Test-Path -LiteralPath $dir)) {
            Invoke-Step "create $dir" {
                New-Item -ItemType Directory -Path $dir -Force | Out-Null
                Add-Undo "remove $dir" { param($p) Remove-Item -LiteralPath $p -Recurse -Force -ErrorAction SilentlyContinue } @($dir)
                [void]$script:Manifest.Add("dir`t$dir")
            }
        }
    }
    if ($Receiver -eq '') {
        Write-Line "    keeping the existing $configFile"
        return $configFile
    }
    $arguments = Get-ConfigureArguments $configFile (Join-Path $ConfigDir 'receiver-ca.pem')
    if ($DryRun) {
        Write-Line "    [dry-run] write $configFile"
        Invoke-FerryChecked $PackageDir ($arguments + @('--check')) | ForEach-Object { Write-Line "        | $_" }
        return $configFile
    }
    if (Test-Path -LiteralPath $configFile) {
        $saved = Get-Content -LiteralPath $configFile -Raw
        Add-Undo "restore $configFile" { param($file, $text) [IO.File]::WriteAllText($file, $text, (New-Object System.Text.UTF8Encoding($false))) } @($configFile, $saved)
    }
    else {
        Add-Undo "remove $configFile" { param($file) Remove-Item -LiteralPath $file -Force -ErrorAction SilentlyContinue } @($configFile)
    }
    if ($CaFile -ne '') {
        Copy-Item -LiteralPath $CaFile -Destination (Join-Path $ConfigDir 'receiver-ca.pem') -Force
    }
    Write-Line "    + ferry $($arguments -join ' ')"
    Invoke-FerryChecked $InstallDir $arguments | ForEach-Object { Write-Line "    | $_" }
    Set-PrivateAcl $ConfigDir
    Set-PrivateAcl $StateDir
    return $configFile
}

# The ferry agent configure arguments of this install; $CaPath is where the CA bundle is (or
# will be) when -CaFile was given instead of -Fingerprint.
function Get-ConfigureArguments {
    param([string]$ConfigFile, [string]$CaPath)
    $arguments = @('agent', 'configure', '--config', $ConfigFile, '--receiver', $Receiver, '--state-dir', $StateDir, '--capture', $Capture)
    if ($Fingerprint -ne '') {
        $arguments += @('--fingerprint', $Fingerprint)
    }
    elseif ($CaFile -ne '') {
        $arguments += @('--ca-file', $CaPath)
    }
    if ($Name -ne '') {
        $arguments += @('--name', $Name)
    }
    foreach ($spec in $Volume) {
        $arguments += @('--volume', $spec)
    }
    return , $arguments
}

# Runs ferry (of the package or install folder $Root) and returns its output lines; a refusal
# (exit 2: ferry agent configure owns the config's format and checks) stops the install with its
# one line, any other failure with exit 1.
function Invoke-FerryChecked {
    param([string]$Root, [string[]]$Arguments)
    $node = Join-Path $Root 'runtime\node.exe'
    $main = Join-Path $Root 'dist\cli\main.js'
    # ferry's stderr line must not turn into a terminating error before its exit code is read.
    $ErrorActionPreference = 'Continue'
    $output = @(& $node $main @Arguments 2>&1 | ForEach-Object { "$_" })
    $code = $LASTEXITCODE
    $ErrorActionPreference = 'Stop'
    if ($code -eq 2) {
        Stop-Install 2 (($output | Select-Object -Last 1) -replace '^ferry: ', '')
    }
    if ($code -ne 0) {
        Stop-Install 1 "ferry $($Arguments[0]) $($Arguments[1]) failed (exit $code): $($output -join ' ')"
    }
    return $output
}

# Bad receiver, trust, volume or name options stop here, before anything changes.
function Test-Config {
    if ($Receiver -eq '') {
        return
    }
    $arguments = Get-ConfigureArguments (Join-Path $ConfigDir 'agent.json') $CaFile
    Invoke-FerryChecked $PackageDir ($arguments + @('--check')) | Out-Null
}

function Invoke-Ferry {
    param([string[]]$Arguments, [string]$InputText = '')
    $node = Join-Path $InstallDir 'runtime\node.exe'
    $main = Join-Path $InstallDir 'dist\cli\main.js'
    if ($InputText -ne '') {
        $InputText | & $node $main @Arguments 2>&1 | ForEach-Object { Write-Line "    | $_" }
    }
    else {
        & $node $main @Arguments 2>&1 | ForEach-Object { Write-Line "    | $_" }
    }
    return $LASTEXITCODE
}

function Register-Agent {
    param([string]$ConfigFile)
    Write-Step 'register with the receiver'
    $marker = Join-Path $StateDir '.installer-registered'
    if ($NoRegister) {
        Write-Line "    skipped (-NoRegister); later: ferry agent register --config $ConfigFile"
        return
    }
    if ((Test-Path -LiteralPath $marker) -and ($Receiver -eq '' -or (Get-Content -LiteralPath $marker -Raw).Trim() -eq $Receiver)) {
        Write-Line '    already registered'
        return
    }
    if ($DryRun) {
        Write-Line "    [dry-run] ferry agent register --config $ConfigFile (passphrase from a file or a prompt)"
        return
    }
    $before = @(Get-ChildItem -LiteralPath $StateDir -Force | ForEach-Object { $_.Name })
    Add-Undo 'remove what registration added to the state folder' {
        param($dir, $keep)
        Get-ChildItem -LiteralPath $dir -Force | Where-Object { $keep -notcontains $_.Name } | Remove-Item -Recurse -Force
    } @($StateDir, $before)
    if ($PassphraseFile -ne '') {
        $code = Invoke-Ferry @('agent', 'register', '--config', $ConfigFile, '--passphrase-file', $PassphraseFile)
    }
    else {
        $secure = Read-Host -Prompt 'Registration passphrase' -AsSecureString
        $plain = [Runtime.InteropServices.Marshal]::PtrToStringBSTR([Runtime.InteropServices.Marshal]::SecureStringToBSTR($secure))
        $code = Invoke-Ferry @('agent', 'register', '--config', $ConfigFile) $plain
    }
    switch ($code) {
        0 { }
        5 { Stop-Install 5 'registration refused: the receiver did not accept the passphrase' }
        6 { Stop-Install 6 'registration failed: the receiver is unreachable or its certificate does not match' }
        2 { Stop-Install 2 "registration failed: the agent rejected the configuration in $ConfigFile" }
        default { Stop-Install 1 "registration failed (ferry agent register exited $code)" }
    }
    $url = $Receiver
    if ($url -eq '') {
        $url = (Invoke-FerryChecked $InstallDir @('agent', 'show-config', '--config', $ConfigFile, '--field', 'receiver.url') | Select-Object -Last 1)
    }
    Set-Content -LiteralPath $marker -Value $url -Encoding ASCII
}

function Stop-AgentService {
    $existing = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
    if ($null -ne $existing -and $existing.Status -ne 'Stopped') {
        Stop-Service -Name $ServiceName -Force
        Add-Undo "start $ServiceName again" { param($svc) Start-Service -Name $svc -ErrorAction SilentlyContinue } @($ServiceName)
    }
}

function Install-AgentService {
    param([string]$ConfigFile)
    Write-Step "service $ServiceName"
    $exe = Join-Path $InstallDir 'ferry-service.exe'
    $logDir = Join-Path $StateDir 'logs'
    $binaryPath = "`"$exe`" `"$InstallDir`" `"$ConfigFile`" `"$logDir`""
    $existing = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
    if ($null -eq $existing) {
        Invoke-Step "New-Service $ServiceName ($binaryPath)" {
            New-Service -Name $ServiceName -BinaryPathName $binaryPath -DisplayName 'Ferry protection agent' `
                -Description 'Captures block writes and replicates them to the Ferry receiver.' -StartupType Automatic | Out-Null
            Add-Undo "delete service $ServiceName" {
                param($svc)
                Stop-Service -Name $svc -Force -ErrorAction SilentlyContinue
                & sc.exe delete $svc | Out-Null
            } @($ServiceName)
            [void]$script:Manifest.Add("service`t$ServiceName")
        }
    }
    else {
        Invoke-Step "update service $ServiceName" {
            & sc.exe config $ServiceName binPath= $binaryPath start= auto | Out-Null
        }
    }
    Invoke-Step 'recovery: restart after 5 s, 5 s, then 60 s; reset the count after a day' {
        & sc.exe failure $ServiceName reset= 86400 actions= restart/5000/restart/5000/restart/60000 | Out-Null
        & sc.exe failureflag $ServiceName 1 | Out-Null
    }
    if ($NoStart) {
        Write-Line "    not started (-NoStart): Start-Service $ServiceName"
        return
    }
    Invoke-Step "start $ServiceName" {
        Start-Service -Name $ServiceName
        (Get-Service -Name $ServiceName).WaitForStatus('Running', [TimeSpan]::FromSeconds(30))
    }
}

function Save-Manifest {
    if ($DryRun) {
        return
    }
    $file = Join-Path $InstallDir 'install-manifest.txt'
    $old = Join-Path "$InstallDir.old" 'install-manifest.txt'
    $lines = @()
    if (Test-Path -LiteralPath $old) {
        $lines += Get-Content -LiteralPath $old
    }
    $lines += $script:Manifest
    $lines | Select-Object -Unique | Set-Content -LiteralPath $file -Encoding UTF8
}

# ------------------------------------------------------------------ install / uninstall

function Invoke-Install {
    Write-Step 'Ferry agent install'
    Assert-Arguments
    Assert-Package
    Test-Config
    Install-Driver
    Install-Files
    $configFile = Write-Config
    Register-Agent $configFile
    Install-AgentService $configFile
    Save-Manifest
    $script:Committed = $true
    if (Test-Path -LiteralPath "$InstallDir.old") {
        Remove-Item -LiteralPath "$InstallDir.old" -Recurse -Force
    }
    Remove-Passphrase
    $version = (Get-Content -LiteralPath (Join-Path $PackageDir 'PACKAGE') | Where-Object { $_ -like 'version=*' }) -replace '^version=', ''
    Write-Result "OK agent $version in $InstallDir, capture $Capture, service $ServiceName"
    Remove-Bootstrap
}

function Invoke-Uninstall {
    Write-Step 'Ferry agent uninstall'
    $script:Committed = $true
    $manifest = Join-Path $InstallDir 'install-manifest.txt'
    if (-not (Test-Path -LiteralPath $manifest)) {
        Write-Result "OK nothing installed in $InstallDir"
        return
    }
    $entries = @(Get-Content -LiteralPath $manifest)
    [array]::Reverse($entries)
    foreach ($entry in $entries) {
        $kind, $value = $entry -split "`t", 2
        switch ($kind) {
            'service' {
                Invoke-Step "stop and delete service $value" {
                    Stop-Service -Name $value -Force -ErrorAction SilentlyContinue
                    & sc.exe delete $value | Out-Null
                }
            }
            'driver' {
                Invoke-Step "remove driver package $value" { & pnputil.exe /delete-driver $value /uninstall /force | Out-Null }
            }
            'dir' {
                if (-not $KeepState) {
                    Invoke-Step "remove $value" { Remove-Item -LiteralPath $value -Recurse -Force -ErrorAction SilentlyContinue }
                }
            }
        }
    }
    Invoke-Step "remove $InstallDir" { Remove-Item -LiteralPath $InstallDir -Recurse -Force }
    Write-Result "OK uninstalled from $InstallDir"
}

try {
    if (-not $DryRun -and -not (Test-Administrator)) {
        Stop-Install 3 'run install.ps1 as Administrator'
    }
    if ($Uninstall) {
        Invoke-Uninstall
    }
    else {
        Invoke-Install
    }
    exit 0
}
catch {
    Stop-Install 1 $_.Exception.Message
}
