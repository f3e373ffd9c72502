"""The doctor: environment checks and the memory planner.

    system.py    OS, Python, CPU and SIMD, RAM, disk
    nvidia.py    GPUs and driver, via NVML or nvidia-smi
    pytorch.py   torch's build, CUDA visibility and why not
    bnb.py       bitsandbytes (its functional check runs in bnb_probe.py)
    llamacpp.py  llama-cpp-python's build
    versions.py  package versions against starchart's requirements
    compat.py    the driver -> CUDA, torch -> CUDA and bitsandbytes tables, with sources
    install_plan.py  what to pip install here (stdlib only: `make` runs it first);
                 fix.py  `doctor --fix` applies its steps
    planner.py   memory per precision (gguf.py, safetensors_header.py read the files)
    report.py    checks and sections;  render.py  text and JSON;  units.py  GB
    run.py       everything into one report;  command.py  the CLI
"""
