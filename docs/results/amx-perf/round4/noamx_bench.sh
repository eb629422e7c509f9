# run xmodlm bench with oneDNN limited to AVX-512 + BF16 (no AMX) and the kernels' AMX choices off
cd "$1" && ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 PYTHONPATH=src python3 -c "
import sys
from xmodlm import kernels
kernels.prefer_amx_paths(False)
from xmodlm.cli import main
sys.argv = ['xmodlm', 'bench', '--suite', 'infer,train', '--steps', '5', '--warmup', '2']
main()
"
