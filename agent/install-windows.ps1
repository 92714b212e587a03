<#
.SYNOPSIS
  Installs the vmhealth agent as a Windows service (started automatically, restarted on failure).

.DESCRIPTION
  Installs the vmhealth package with pywin32 into the Python given by -Python, writes
  %ProgramData%\vmhealth\agent.yml (readable by SYSTEM and Administrators only, since it holds the key),
  registers the service "vmhealth-agent" and starts it. Run it again to change settings; -Uninstall
  removes the service (the configuration and log stay).

.EXAMPLE
  # agent.key: this guest's own key, from `vmhealth agent-key --cluster lab --vmid 105` on the exporter's host
  .\install-windows.ps1 -ExporterUrl http://vmhealth.example.org:9747 -ApiKey (Get-Content .\agent.key)

.EXAMPLE
  # an exporter pair: every report goes to both (exporter_urls in agent.yml)
  .\install-windows.ps1 -ExporterUrl http://vmhealth-a.example.org:9747,http://vmhealth-b.example.org:9747 -ApiKey $key

.EXAMPLE
  .\install-windows.ps1 -ExporterUrl https://vmhealth.example.org:9747 -ApiKey $key -Vmid 105 -CaBundle C:\ca.pem -Package C:\vmhealth-0.1.0-py3-none-any.whl

.EXAMPLE
  # mutual TLS: the exporter has tls_client_ca_file; this guest presents its own certificate
  .\install-windows.ps1 -ExporterUrl https://vmhealth.example.org:9747 -ApiKey $key -CaBundle C:\ca.pem -ClientCertFile C:\vmhealth\guest.crt -ClientKeyFile C:\vmhealth\guest.key
#>
[CmdletBinding()]
param(
  [Alias("ExporterUrls")][string[]]$ExporterUrl,
  [string]$ApiKey,
  [int]$Vmid = 0,
  [string]$Cluster = "",
  [string]$Interval = "30s",
  [ValidateSet("push", "pull", "both")][string]$Mode = "push",
  [string]$CaBundle = "",
  [string]$ClientCertFile = "",
  [string]$ClientKeyFile = "",
  [string]$Package = "vmhealth[windows]",
  [string]$Python = "py",
  [switch]$Uninstall
)
$ErrorActionPreference = "Stop"
$ServiceName = "vmhealth-agent"
$DataDir = Join-Path $env:ProgramData "vmhealth"
$ConfigPath = Join-Path $DataDir "agent.yml"

function Invoke-Python([string[]]$Arguments) {
  & $Python @Arguments
  if ($LASTEXITCODE -ne 0) { throw "$Python $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

if ($Uninstall) {
  if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
    Stop-Service -Name $ServiceName -ErrorAction SilentlyContinue
    Invoke-Python @("-m", "vmhealth.agent.windows_service", "remove")
  }
  Write-Host "vmhealth-agent removed; $DataDir is kept."
  exit 0
}

if (-not ([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()).IsInRole(
    [Security.Principal.WindowsBuiltInRole]::Administrator)) {
  throw "Run this script as Administrator (it installs a service)."
}
if (($Mode -ne "pull") -and (-not $ExporterUrl -or -not $ApiKey)) {
  throw "-ExporterUrl and -ApiKey are needed in mode $Mode."
}

# 1. The package, with pywin32, and pywin32's service host registration.
Invoke-Python @("-m", "pip", "install", "--upgrade", "--quiet", $Package)
$Scripts = (& $Python -c "import sysconfig; print(sysconfig.get_path('scripts'))").Trim()
$PostInstall = Join-Path $Scripts "pywin32_postinstall.py"
if (Test-Path $PostInstall) { Invoke-Python @($PostInstall, "-install", "-quiet") }

# 2. The configuration: JSON is valid YAML, and needs no PyYAML in the guest.
New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
$Agent = [ordered]@{ mode = $Mode; interval = $Interval; listen = "0.0.0.0:9748" }
if ($ExporterUrl.Count -gt 1) { $Agent.exporter_urls = @($ExporterUrl) }
elseif ($ExporterUrl) { $Agent.exporter_url = $ExporterUrl[0] }
if ($ApiKey) { $Agent.api_key = $ApiKey }
if ($Vmid -gt 0) { $Agent.vmid = $Vmid }
if ($Cluster) { $Agent.cluster = $Cluster }
if ($CaBundle) { $Agent.ca_bundle = $CaBundle }
if ($ClientCertFile) { $Agent.client_cert_file = $ClientCertFile }
if ($ClientKeyFile) { $Agent.client_key_file = $ClientKeyFile }
@{ agent = $Agent } | ConvertTo-Json -Depth 3 | Set-Content -Path $ConfigPath -Encoding UTF8
# Only SYSTEM (the service) and Administrators may read the key.
& icacls.exe $ConfigPath /inheritance:r /grant:r "*S-1-5-18:(R)" "*S-1-5-32-544:(F)" | Out-Null

# 3. Check now, so a wrong URL or key is explained here rather than only in the log. The service is
#    installed anyway: it keeps retrying, and an exporter that is down today may be up tomorrow.
& $Python -m vmhealth.agent --config $ConfigPath --check
if ($LASTEXITCODE -ne 0) { Write-Warning "the check above found problems; the service is installed anyway" }

# 4. The service: automatic (delayed) start, restart after 5 s, 10 s, then every minute.
if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
  Stop-Service -Name $ServiceName -ErrorAction SilentlyContinue
  Invoke-Python @("-m", "vmhealth.agent.windows_service", "--startup", "delayed", "update")
} else {
  Invoke-Python @("-m", "vmhealth.agent.windows_service", "--startup", "delayed", "install")
}
& sc.exe failure $ServiceName reset= 86400 actions= restart/5000/restart/10000/restart/60000 | Out-Null
& sc.exe failureflag $ServiceName 1 | Out-Null
if ($Mode -ne "push") {
  New-NetFirewallRule -DisplayName "vmhealth agent /metrics" -Direction Inbound -Protocol TCP -LocalPort 9748 `
    -Action Allow -ErrorAction SilentlyContinue | Out-Null
}
Start-Service -Name $ServiceName
Write-Host "vmhealth-agent is running; configuration $ConfigPath, log $(Join-Path $DataDir 'agent.log')."
