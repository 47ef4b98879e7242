# maskd installer for Windows (PowerShell): maskd's own Python environment, the right torch build,
# the model weights and the GIMP/Krita plugins, in one command. Safe to re-run (upgrades in place).
#   powershell -ExecutionPolicy Bypass -File installers\install.ps1
#   powershell -ExecutionPolicy Bypass -File installers\install.ps1 --weights C:\path\model.safetensors --variant lite
#   powershell -ExecutionPolicy Bypass -File installers\install.ps1 --uninstall
# The logic lives in installers\install.py (standard library only); this only finds a Python >= 3.10.
$ErrorActionPreference = "Stop"
$here = Split-Path -Parent $MyInvocation.MyCommand.Path
$check = "import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)"

$python = $null
if ($env:MASKD_PYTHON) { $python = @($env:MASKD_PYTHON) }
else {
    foreach ($candidate in @(@("py", "-3"), @("python"), @("python3"))) {
        if (Get-Command $candidate[0] -ErrorAction SilentlyContinue) {
            $rest = @($candidate | Select-Object -Skip 1)
            & $candidate[0] @rest -c $check 2>$null
            if ($LASTEXITCODE -eq 0) { $python = $candidate; break }
        }
    }
}
if (-not $python) {
    Write-Error ("maskd needs Python 3.10 or newer: install it from https://www.python.org/downloads/ " +
                 "(tick 'Add python.exe to PATH') or set MASKD_PYTHON to its python.exe, then run this again.")
    exit 1
}
$rest = @($python | Select-Object -Skip 1)
& $python[0] @rest (Join-Path $here "install.py") @args
exit $LASTEXITCODE
