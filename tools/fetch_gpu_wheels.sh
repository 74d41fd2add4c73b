#!/usr/bin/env bash
# Gets ready what the lent GPU machines lack (Python 3.12 there, no network: /work/.library/device/README.md):
#   .whl/   the wheels of the peers (foolbox and its needs, torchattacks) and expecttest (opcheck tests);
#           numpy, scipy, tqdm, pillow, matplotlib, scikit-learn, pytest, ninja and pybind11 are there.
#           faiss-cpu (31 MB) is left out: it would not fit the 64 MiB a call carries.
#   .data/  MNIST (11 MB, for bench/labeler.py) and the ImageNet sample (10 MB, for bench/minnorm_gpu.py),
#           copied from ../shared/data, which does not travel.
# Both folders are ignored by .gitignore. Carry them in the device call; bench/gpu_session.sh uses them.
set -euo pipefail
cd "$(dirname "$0")/.."
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl \
  foolbox==3.3.4 eagerpy==0.30.0 GitPython==3.1.45 gitdb==4.0.12 smmap==5.0.2 torchattacks==3.5.1 \
  expecttest==0.3.0
mkdir -p .data
for name in mnist imagenet-sample; do
  [ -d "../shared/data/$name" ] && cp -r "../shared/data/$name" .data/
done
ls .whl .data
du -sh .whl .data
