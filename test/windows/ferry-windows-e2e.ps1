<#
.SYNOPSIS
    End-to-end check of Windows kernel capture (ferryflt.sys) on a Windows test machine.

.DESCRIPTION
    NOT RUN IN CI: Ferry's CI has no Windows machine. This script is the procedure for one
    (test\windows\README.md). It runs in two phases separated by a reboot.

      -Phase Install   checks test signing, installs the test-signed driver package, turns Fast
                       Startup off. Reboot afterwards.
      -Phase Run       creates a 1 GiB test volume (VHDX), protects it (metadata area, registry,
                       rescan), starts a receiver and a kernel-capture agent, waits for the
                       initial sync, writes a pattern, takes a VSS tag through the agent and one
                       directly through the driver, exports the tagged point from the receiver
                       and compares hashes with the source.
      -Phase Cleanup   stops the processes, unprotects, detaches and deletes the test volume.

    Exit code 0 only if every check passed. Every step prints what it does.

.EXAMPLE
    .\test\windows\ferry-windows-e2e.ps1 -Phase Install -DriverDir C:\build\ferryflt
    Restart-Computer
    .\test\windows\ferry-windows-e2e.ps1 -Phase Run
#>
[CmdletBinding()]
param(
    [ValidateSet('Install', 'Run', 'Cleanup')]
    [string]$Phase = 'Run',
    [string]$DriverDir = '',
    [string]$RepoDir = '',
    [string]$WorkDir = 'C:\ferry-e2e',
    [int]$VolumeSizeMB = 1024,
    [int]$PatternMB = 64,
    [int]$TimeoutSec = 900
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

if ($RepoDir -eq '') { $RepoDir = (Resolve-Path (Join-Path $PSScriptRoot '..\..')).Path }
$Ferry = Join-Path $RepoDir 'bin\ferry'
$CtlHelper = Join-Path $RepoDir 'test\windows\ferryctl.js'
$ServiceKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\ferryflt'
$VolumeId = 'e2e'
$ReceiverPort = 7443
$script:Failures = 0

function Write-Step([string]$Text) { Write-Host "==> $Text" -ForegroundColor Cyan }

function Assert-Check([bool]$Ok, [string]$What) {
    if ($Ok) {
        Write-Host "    ok: $What" -ForegroundColor Green
    } else {
        Write-Host "    FAILED: $What" -ForegroundColor Red
        $script:Failures++
    }
}

function Assert-Admin {
    $principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'run this script as an administrator'
    }
}

# Runs the ferry CLI with node and returns its standard output (throws on a non-zero exit).
function Invoke-Ferry {
    param([string[]]$Arguments)
    $out = & node $Ferry @Arguments 2>&1 | Out-String
    if ($LASTEXITCODE -ne 0) { throw "ferry $($Arguments -join ' ') failed ($LASTEXITCODE): $out" }
    return $out
}

# Runs ferryctl.js; emits its JSON result (an array's elements one by one).
function Invoke-CtlHelper {
    param([string[]]$Arguments)
    $out = & node $CtlHelper @Arguments 2>&1 | Out-String
    if ($LASTEXITCODE -ne 0) { throw "ferryctl $($Arguments -join ' ') failed: $out" }
    $parsed = $out | ConvertFrom-Json
    foreach ($item in $parsed) { $item }
}

# ---------------------------------------------------------------- Install

function Install-FerryDriver {
    Write-Step 'test signing'
    $boot = & bcdedit.exe /enum '{current}' | Out-String
    if ($boot -notmatch 'testsigning\s+Yes') {
        throw 'test signing is off: run "bcdedit /set testsigning on", reboot, then run -Phase Install again'
    }
    if ($DriverDir -eq '' -or -not (Test-Path (Join-Path $DriverDir 'ferryflt.inf'))) {
        throw '-DriverDir must hold the signed ferryflt.sys, ferryflt.inf and ferryflt.cat'
    }
    foreach ($file in @('ferryflt.sys', 'ferryflt.cat')) {
        $sig = Get-AuthenticodeSignature -FilePath (Join-Path $DriverDir $file)
        Assert-Check ($null -ne $sig.SignerCertificate) "$file is signed ($($sig.Status))"
    }
    Write-Step 'install the driver package'
    $out = & pnputil.exe /add-driver (Join-Path $DriverDir 'ferryflt.inf') /install 2>&1 | Out-String
    Write-Host $out
    if ($LASTEXITCODE -ne 0) { throw 'pnputil could not install ferryflt.inf' }
    $filters = (Get-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control\Class\{71A27CDD-812A-11D0-BEC7-08002BE10318}').UpperFilters
    Assert-Check ($filters -contains 'ferryflt') "Volume class UpperFilters = $($filters -join ', ')"
    Assert-Check ($filters -contains 'volsnap') 'volsnap is still an upper filter (appended, not replaced)'
    Write-Step 'turn Fast Startup off (a hibernation: every boot would need a hash-compare resync)'
    Set-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Power' -Name HiberbootEnabled -Value 0
    Write-Host 'Reboot now, then run: ferry-windows-e2e.ps1 -Phase Run'
}

# ---------------------------------------------------------------- the test volume

function Get-FreeDriveLetter {
    $used = (Get-PSDrive -PSProvider FileSystem).Name
    foreach ($letter in 'TUVWXYRSQP'.ToCharArray()) {
        if ($used -notcontains [string]$letter) { return [string]$letter }
    }
    throw 'no free drive letter'
}

function New-TestVolume {
    Write-Step "create a $VolumeSizeMB MiB test volume"
    New-Item -ItemType Directory -Force -Path $WorkDir | Out-Null
    $vhd = Join-Path $WorkDir 'e2e.vhdx'
    $letter = Get-FreeDriveLetter
    $script = Join-Path $WorkDir 'diskpart-create.txt'
    @(
        "create vdisk file=`"$vhd`" maximum=$VolumeSizeMB type=fixed",
        "select vdisk file=`"$vhd`"",
        'attach vdisk',
        'create partition primary',
        'format fs=ntfs quick label=FERRYE2E',
        "assign letter=$letter"
    ) | Set-Content -Encoding ASCII -Path $script
    & diskpart.exe /s $script | Out-Host
    if ($LASTEXITCODE -ne 0) { throw 'diskpart failed' }
    # shadow storage elsewhere: copy-on-write below the filter must not land on this volume
    $storage = Invoke-CimMethod -ClassName Win32_ShadowStorage -MethodName Create `
        -Arguments @{ Volume = "$($letter):\"; DiffVolume = 'C:\' }
    Assert-Check ($storage.ReturnValue -eq 0) "shadow storage for $($letter): on C: (WMI result $($storage.ReturnValue))"
    return $letter
}

function Get-VolumeGuidName([string]$Letter) {
    $path = (Get-Volume -DriveLetter $Letter).Path   # \\?\Volume{...}\
    if ($path -notmatch '(Volume\{[0-9a-fA-F-]+\})') { throw "no volume GUID for $($Letter):" }
    return $Matches[1]
}

# ---------------------------------------------------------------- protection

# Metadata area size for a volume (native/windows/README.md, "Configuration").
function Get-MetadataBytes([long]$VolumeBytes, [long]$Granularity) {
    $bits = [long][Math]::Ceiling($VolumeBytes / $Granularity)
    $bitmapBytes = [long][Math]::Ceiling($bits / 64) * 8
    return 4096 + [long][Math]::Ceiling($bitmapBytes / 4096) * 4096
}

function Protect-FerryVolume([string]$Letter) {
    Write-Step "protect $($Letter):"
    $name = Get-VolumeGuidName $Letter
    $volumeBytes = (Get-Partition -DriveLetter $Letter).Size
    # at least 64 KiB: a tiny file could live inside the MFT record, with no clusters
    $mdBytes = [Math]::Max((Get-MetadataBytes $volumeBytes (64 * 1024)), [long]65536)
    $dir = "$($Letter):\ferry"
    $file = Join-Path $dir 'metadata.fmd'
    New-Item -ItemType Directory -Force -Path $dir | Out-Null
    # zero-filled (valid data length = size), the reserved magic first, written through
    $bytes = New-Object byte[] $mdBytes
    [Text.Encoding]::ASCII.GetBytes('FERRYMDX').CopyTo($bytes, 0)
    $stream = New-Object IO.FileStream($file, [IO.FileMode]::CreateNew, [IO.FileAccess]::Write, [IO.FileShare]::None, 4096, [IO.FileOptions]::WriteThrough)
    try { $stream.Write($bytes, 0, $bytes.Length); $stream.Flush($true) } finally { $stream.Close() }
    & attrib.exe +h +s $file

    # one extent: VCN 0, its LCN, times the cluster size
    $extents = & fsutil.exe file queryextents $file | Where-Object { $_ -match 'LCN' }
    if (@($extents).Count -ne 1) { throw "the metadata file is not contiguous: $extents" }
    if ($extents -notmatch 'LCN:\s*0x([0-9a-fA-F]+)') { throw "cannot read the LCN from: $extents" }
    $lcn = [Convert]::ToInt64($Matches[1], 16)
    $cluster = [long](Get-CimInstance Win32_Volume -Filter "DriveLetter='$($Letter):'").BlockSize
    $offset = $lcn * $cluster
    Write-Host "    metadata area: $mdBytes bytes at volume offset $offset (LCN $lcn x $cluster)"

    $uid = (Get-ItemProperty 'HKLM:\SYSTEM\MountedDevices')."\??\$name"
    if ($null -eq $uid) { throw "no MountedDevices entry for $name" }
    $key = Join-Path $ServiceKey "Parameters\Volumes\$name"
    New-Item -Force -Path $key | Out-Null
    New-ItemProperty -Force -Path $key -Name UniqueId -PropertyType Binary -Value ([byte[]]$uid) | Out-Null
    New-ItemProperty -Force -Path $key -Name MetadataOffset -PropertyType QWord -Value $offset | Out-Null
    New-ItemProperty -Force -Path $key -Name MetadataBytes -PropertyType QWord -Value $mdBytes | Out-Null

    $rescan = Invoke-CtlHelper @('rescan')
    Assert-Check ($rescan.started -ge 1) "rescan started protection ($($rescan | ConvertTo-Json -Compress))"
    $status = (Get-ItemProperty $key).LastStatus
    Assert-Check ($status -eq 0) ('LastStatus = 0x{0:X8}' -f $status)
    $device = @(Invoke-CtlHelper @('list')) | Where-Object { $_.name -eq $name }
    Assert-Check ($null -ne $device) "$name is tracked by the driver"
    Assert-Check ($device.startState -eq 'new') "first start is NEW (got $($device.startState))"
    return @{ Name = $name; Index = [int]$device.index }
}

# ---------------------------------------------------------------- receiver and agent

function Start-FerryProcess([string]$Name, [string[]]$Arguments) {
    $log = Join-Path $WorkDir "$Name.log"
    $proc = Start-Process -FilePath 'node' -ArgumentList (@($Ferry) + $Arguments) -PassThru -NoNewWindow `
        -RedirectStandardOutput $log -RedirectStandardError "$log.err"
    $proc.Id | Set-Content (Join-Path $WorkDir "$Name.pid")
    return $proc
}

function Start-ReceiverAndAgent([string]$VolumeName) {
    Write-Step 'start a receiver and a kernel-capture agent'
    $data = Join-Path $WorkDir 'receiver'
    $pass = Join-Path $WorkDir 'passphrase'
    'e2e-registration-passphrase' | Set-Content -NoNewline $pass
    Start-FerryProcess 'receiver' @('receiver', 'run', '--data', $data, '--listen', "127.0.0.1:$ReceiverPort", '--passphrase-file', $pass) | Out-Null
    $deadline = (Get-Date).AddSeconds(60)
    do {
        Start-Sleep -Seconds 1
        $status = $null
        try { $status = Invoke-Ferry @('receiver', 'status', '--data', $data, '--json') | ConvertFrom-Json } catch { $status = $null }
    } while (($null -eq $status -or -not $status.fingerprint) -and (Get-Date) -lt $deadline)
    if ($null -eq $status) { throw 'the receiver did not start' }
    $config = Join-Path $WorkDir 'agent.json'
    @{
        receiver = @{ url = "wss://127.0.0.1:$ReceiverPort"; fingerprint = $status.fingerprint }
        name     = 'win-e2e'
        stateDir = (Join-Path $WorkDir 'agent-state')
        capture  = 'kernel'
        volumes  = @(@{ id = $VolumeId; path = "\\?\$VolumeName" })
    } | ConvertTo-Json -Depth 5 | Set-Content -Encoding UTF8 $config
    Invoke-Ferry @('agent', 'register', '--config', $config, '--passphrase-file', $pass) | Out-Host
    Start-FerryProcess 'agent' @('agent', 'run', '--config', $config) | Out-Null
    return @{ Data = $data; Config = $config }
}

function Get-Points([string]$Data) {
    return @(Invoke-Ferry @('points', '--data', $Data, '--volume', $VolumeId, '--json') | ConvertFrom-Json)
}

# Waits for a point matching the filter that the receiver can export.
function Wait-Point([string]$Data, [scriptblock]$Filter, [string]$What) {
    $deadline = (Get-Date).AddSeconds($TimeoutSec)
    while ((Get-Date) -lt $deadline) {
        $point = Get-Points $Data | Where-Object $Filter | Where-Object { $_.exportable } | Select-Object -Last 1
        if ($null -ne $point) { return $point }
        Start-Sleep -Seconds 2
    }
    throw "timed out waiting for $What"
}

# ---------------------------------------------------------------- the check

# A deterministic pattern: bytes from a seeded generator, so any copy can be checked.
function Write-Pattern([string]$File, [int]$MB) {
    $rng = New-Object Random 20261101
    $block = New-Object byte[] (1024 * 1024)
    $stream = New-Object IO.FileStream($File, [IO.FileMode]::Create, [IO.FileAccess]::Write, [IO.FileShare]::None, 1048576, [IO.FileOptions]::WriteThrough)
    try {
        for ($i = 0; $i -lt $MB; $i++) { $rng.NextBytes($block); $stream.Write($block, 0, $block.Length) }
        $stream.Flush($true)
    } finally { $stream.Close() }
    return (Get-FileHash -Algorithm SHA256 $File).Hash
}

function Compare-ExportedPoint([string]$Data, $Point, [string]$SourceHash) {
    $image = Join-Path $WorkDir "point-$($Point.id).vhd"
    Remove-Item -Force -ErrorAction SilentlyContinue $image
    Invoke-Ferry @('export', '--data', $Data, '--volume', $VolumeId, '--point', "$($Point.id)", '--out', $image, '--format', 'vhd') | Out-Host
    $mounted = Mount-DiskImage -ImagePath $image -Access ReadOnly -PassThru
    try {
        Start-Sleep -Seconds 2
        $letter = ($mounted | Get-Disk | Get-Partition | Get-Volume | Where-Object DriveLetter | Select-Object -First 1).DriveLetter
        if (-not $letter) { throw 'the exported image mounted without a drive letter' }
        $hash = (Get-FileHash -Algorithm SHA256 "$($letter):\pattern.bin").Hash
        Assert-Check ($hash -eq $SourceHash) "pattern.bin in point $($Point.id) ($($Point.kind), $($Point.accuracy)) has the source's SHA-256"
    } finally {
        Dismount-DiskImage -ImagePath $image | Out-Null
    }
}

function Invoke-Run {
    Assert-Admin
    $filters = (Get-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control\Class\{71A27CDD-812A-11D0-BEC7-08002BE10318}').UpperFilters
    if ($filters -notcontains 'ferryflt') { throw 'ferryflt is not installed: run -Phase Install and reboot' }
    if ((Get-Service ferryflt).Status -ne 'Running') { throw 'the ferryflt service is not running (did the machine reboot?)' }
    if (Test-Path $WorkDir) { throw "$WorkDir exists: run -Phase Cleanup first" }

    $letter = New-TestVolume
    $prot = Protect-FerryVolume $letter
    $procs = Start-ReceiverAndAgent $prot.Name

    Write-Step 'wait for the initial sync (an exact crash-consistent point)'
    Wait-Point $procs.Data { $_.accuracy -eq 'exact' } 'the first exact point' | Out-Null

    Write-Step "write a $PatternMB MiB pattern to $($letter):\pattern.bin"
    $sourceHash = Write-Pattern "$($letter):\pattern.bin" $PatternMB
    Write-Host "    source SHA-256 $sourceHash"

    Write-Step 'VSS tag through the driver directly (freeze point, hold bridged to volsnap)'
    $direct = Invoke-CtlHelper @('vss-tag', '--volume', "$($letter):\", '--device', "$($prot.Index)", '--tag-id', '424242')
    Assert-Check ($direct.status[0] -eq 'ok' -and $direct.bridged[0]) "driver tagged at the VSS freeze point: seq $($direct.seqs[0]), hold $([Math]::Round($direct.holdNs / 1e6, 1)) ms"

    Write-Step 'application-consistent tag through the agent (VSS on Windows)'
    Invoke-Ferry @('agent', 'tag', '--config', $procs.Config, '--app', '--name', 'vss-e2e') | Out-Host
    $point = Wait-Point $procs.Data { $_.name -eq 'vss-e2e' -and $_.kind -eq 'app' } 'the vss-e2e application-consistent point'

    Write-Step "export point $($point.id) and compare"
    Compare-ExportedPoint $procs.Data $point $sourceHash

    $dev = @(Invoke-CtlHelper @('list')) | Where-Object { $_.name -eq $prot.Name }
    Write-Host "    driver: mode $($dev.mode), next seq $($dev.nextSeq), committed $($dev.committedSeq), writes $($dev.counters.writes), tags $($dev.counters.tags)"
    Assert-Check ($dev.counters.tags -ge 2) 'both tags are in the change stream'

    if ($script:Failures -gt 0) {
        Write-Host "$($script:Failures) check(s) FAILED; logs in $WorkDir" -ForegroundColor Red
        exit 1
    }
    Write-Host "all checks passed; run -Phase Cleanup to remove the test volume" -ForegroundColor Green
}

function Invoke-Cleanup {
    Assert-Admin
    Write-Step 'stop the agent and the receiver'
    foreach ($name in @('agent', 'receiver')) {
        $pidFile = Join-Path $WorkDir "$name.pid"
        if (Test-Path $pidFile) {
            Stop-Process -Id ([int](Get-Content $pidFile)) -Force -ErrorAction SilentlyContinue
        }
    }
    Write-Step 'unprotect and remove the test volume'
    $volumes = Join-Path $ServiceKey 'Parameters\Volumes'
    if (Test-Path $volumes) {
        Get-ChildItem $volumes | Remove-Item -Recurse -Force
        try { Invoke-CtlHelper @('rescan') | Out-Null } catch { Write-Warning $_ }
    }
    $vhd = Join-Path $WorkDir 'e2e.vhdx'
    if (Test-Path $vhd) {
        $script = Join-Path $WorkDir 'diskpart-remove.txt'
        @("select vdisk file=`"$vhd`"", 'detach vdisk') | Set-Content -Encoding ASCII -Path $script
        & diskpart.exe /s $script | Out-Host
    }
    Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $WorkDir
}

switch ($Phase) {
    'Install' { Assert-Admin; Install-FerryDriver }
    'Run' { Invoke-Run }
    'Cleanup' { Invoke-Cleanup }
}
