@echo off
rem Set up a fresh Windows machine and run the system. Needs only Python 3.11 (py launcher or python on PATH).
rem   setup.bat          create .venv, install requirements.txt, run the main job
rem   setup.bat test     create .venv if missing, run the whole test suite
setlocal
cd /d "%~dp0"

if not exist ".venv\Scripts\python.exe" (
    echo [setup] creating .venv
    py -3.11 -m venv .venv 2>nul || python -m venv .venv || goto :fail
    ".venv\Scripts\python.exe" -m pip install --quiet --upgrade pip || goto :fail
    ".venv\Scripts\python.exe" -m pip install --quiet -r requirements.txt || goto :fail
)

if /I "%~1"=="test" (
    ".venv\Scripts\python.exe" -m pytest
) else (
    ".venv\Scripts\python.exe" mlops_pipeline\src\pipeline.py
)
exit /b %errorlevel%

:fail
echo [setup] failed: see the messages above
exit /b 1
