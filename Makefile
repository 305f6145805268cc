# talkinghead — `make help` lists the targets.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
EXP ?= $(if $(DATA),$(DATA)_paper,embedded)
ARGS ?=
T ?= 8
ADAPT ?= auto
need = $(if $($(1)),,$(error $(1)= is required: $(2)))
# one shell word of any value (spaces, quotes, non-ASCII letters): single-quoted, its own quotes escaped
q = '$(subst ','\'',$(1))'
# a yes/no variable, one rule for all of them (OVERWRITE, SIDE, FULL, SMOOTH, QUICK, CPU, BLIND): $(call bool,NAME) is
# "yes" for 1/yes/true/on, empty for 0/no/false/off or unset (any case), and a one-line error for anything else
yes_words := 1 yes true on y Yes True On YES TRUE ON Y
no_words := 0 no false off n No False Off NO FALSE OFF N
bool = $(strip $(if $(filter-out 0 1,$(words $($(1)))),$(call bool_error,$(1)),$(if $(filter $(yes_words),$($(1))),yes,\
	$(if $(filter $(no_words),$($(1))),,$(if $(strip $($(1))),$(call bool_error,$(1)))))))
bool_error = $(error $(1)=$($(1)) is not yes or no: give 1/yes/true/on or 0/no/false/off (or leave $(1) unset))
.DEFAULT_GOAL := help

.PHONY: help install meta-learn finetune reenact export evaluate demo live test test-fast weights weights-list preprocess bench bench-data sanity gpu-check rehearse clean

help:  ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Variables: EXP=embedded|vox2_paper|vox1_paper|vox2_paper_ff|vox1_paper_ff  DATA=vox1|vox2  DATA_ROOT=path  ARGS='key=value ...'"

install:  ## install talkinghead (editable, with test extras); keeps an installed torch, else torch==2.13.*
	@$(PYTHON) -c "import torch" 2>/dev/null && echo "keeping installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')" \
		|| $(PIP) install "torch==2.13.*"
	$(PIP) install -e ".[dev]"

meta-learn:  ## meta-learn E, G, D (default: embedded synthetic data on CPU; EXP=, DATA=, DATA_ROOT=, ARGS=)
	$(PYTHON) -m talkinghead.cli meta-learn experiment=$(EXP) $(if $(DATA),data=$(DATA)) \
		$(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(ARGS)

finetune:  ## avatar of one person from T frames (ID=person/video id or path, T=8, CKPT=latest run, MODE=FT|FF, OVERWRITE=1, ARGS=)
	$(call need,ID,a person or video id such as syn0035/v00 or id90007 or a video or image-folder path)
	$(PYTHON) -m talkinghead.cli finetune $(call q,id=$(ID)) $(call q,T=$(T)) $(if $(CKPT),$(call q,ckpt=$(CKPT))) \
		$(if $(MODE),mode=$(MODE)) $(if $(call bool,OVERWRITE),overwrite=true) $(ARGS)

reenact:  ## drive an avatar: AVATAR=avatar.pt DRIVER=video|id OUT=out.mp4 [OVERWRITE=1] [SIDE=1] [FULL=1 whole source frame] [ADAPT=auto|on|off] [CKPT=] [SMOOTH=on|off] [LANDMARKS=track|detect]
	$(call need,AVATAR,the avatar.pt that make finetune printed)
	$(call need,DRIVER,a driver video / image folder or an id such as syn0020/v01)
	$(PYTHON) -m talkinghead.cli reenact $(call q,$(AVATAR)) $(call q,$(DRIVER)) $(call q,$(or $(OUT),out.mp4)) --adapt $(ADAPT) $(if $(call bool,SIDE),--side-by-side) $(if $(call bool,FULL),--full) \
		$(if $(CKPT),--ckpt $(call q,$(CKPT))) $(if $(SMOOTH),--smooth $(if $(call bool,SMOOTH),on,off)) $(if $(LANDMARKS),--landmarks $(LANDMARKS)) \
		$(if $(call bool,OVERWRITE),--overwrite) $(ARGS)

export:  ## avatar -> one ONNX file for onnxruntime: AVATAR=avatar.pt [OUT=avatar.onnx beside it] [PRECISION=fp32|fp16] [OVERWRITE=1] [CKPT=]
	$(call need,AVATAR,the avatar.pt that make finetune printed)
	$(PYTHON) -m talkinghead.cli export $(call q,$(AVATAR)) $(if $(OUT),$(call q,$(OUT))) $(if $(PRECISION),--precision $(PRECISION)) \
		$(if $(call bool,OVERWRITE),--overwrite) $(if $(CKPT),--ckpt $(call q,$(CKPT))) $(ARGS)

evaluate:  ## the paper's Table 1 protocol: FT/FF x T=1,8,32 -> FID/SSIM/CSIM (CKPT=latest run, FF_CKPT=FF model, PROTOCOLS=table1,cross, ARGS=)
	$(PYTHON) -m talkinghead.cli evaluate $(if $(CKPT),ckpt=$(CKPT)) $(if $(FF_CKPT),ff_ckpt=$(FF_CKPT)) \
		$(if $(PROTOCOLS),protocols=[$(PROTOCOLS)]) $(ARGS)

demo:  ## web page: make an avatar from photos/a video and drive it (CKPT=newest run; ARGS="--host 0.0.0.0 --port 8080")
	$(PYTHON) -m talkinghead.cli demo $(if $(CKPT),--ckpt $(CKPT)) $(ARGS)

live:  ## drive an avatar live from a local camera in an OpenCV window: AVATAR=avatar.pt [CAMERA=0] [CKPT=] [ADAPT=auto|on|off]; q quits
	$(call need,AVATAR,the avatar.pt that make finetune printed)
	$(PYTHON) -m talkinghead.cli live $(call q,$(AVATAR)) --camera $(or $(CAMERA),0) --adapt $(ADAPT) \
		$(if $(CKPT),--ckpt $(call q,$(CKPT))) $(ARGS)

test:  ## run the test suite (CPU; voxmini tests skip where ../shared/data/voxmini is absent)
	$(PYTHON) -m pytest

test-fast:  ## the test suite without the slow training tests
	$(PYTHON) -m pytest -m "not slow"

weights:  ## download the pretrained weight files (Caffe + torchvision VGG19, VGGFace, FID InceptionV3) into weights/ (needs internet)
	$(PYTHON) -m talkinghead.backbones.weights download

weights-list:  ## show which weight files are present
	$(PYTHON) -m talkinghead.backbones.weights list

clean:  ## remove caches (keeps runs/ and weights/)
	rm -rf .pytest_cache build dist *.egg-info src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

preprocess:  ## VoxCeleb videos -> shards: SRC=<mp4 tree> OUT=<shard folder> [BACKEND=auto|dlib|face-alignment] [WORKERS=N] [LANDMARKS=track|detect] [LANDMARK_SET=ibug68|ibug68+iris]
	$(call need,SRC,the video folder such as /data/voxceleb2/dev/mp4)
	$(call need,OUT,the shard folder to write such as /data/vox2-shards)
	$(PYTHON) -m data_modules.preprocess --src "$(SRC)" --out "$(OUT)" --backend $(or $(BACKEND),auto) \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(LANDMARKS),--landmarks $(LANDMARKS)) \
		$(if $(LANDMARK_SET),--landmark-set $(LANDMARK_SET)) $(ARGS)

.PHONY: upgrade-shards
upgrade-shards:  ## add the irises (ibug68+iris) to shard folders made with 68 points, from their stored crops: SHARDS=<folder> [more folders]
	$(call need,SHARDS,the shard folder(s) made by make preprocess)
	$(PYTHON) -m data_modules.upgrade_irises $(SHARDS)

.PHONY: preprocess-slurm
preprocess-slurm:  ## submit preprocessing as a SLURM array of PARTS=64 parts (submitit), ARGS='--slurm-partition=cpu --wait ...'
	$(call need,SRC,the video folder such as /data/voxceleb2)
	$(call need,OUT,a shard folder every node can write such as /shared/vox2-shards)
	$(PYTHON) -m data_modules.slurm --parts $(or $(PARTS),64) --src "$(SRC)" --out "$(OUT)" \
		--backend $(or $(BACKEND),auto) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS)

bench:  ## speed table of every stage (plain vs fast path) + JSON in bench/results/ [QUICK=1 smoke run] [ARGS=--help]
	$(PYTHON) -m talkinghead.tools.bench $(if $(call bool,QUICK),--quick) $(ARGS)

bench-data:  ## loader samples/s at 256², K=8 per worker count, preprocessing videos/min (track vs detect), reenact frames/s [ARGS=]
	$(PYTHON) -m talkinghead.tools.bench_data $(ARGS)

sanity:  ## overfit one synthetic video on the CPU (minutes): PASS if G's reconstruction reaches the stated L1 [BLIND=1 zeroes the landmarks: must FAIL] [ARGS=]
	$(PYTHON) -m talkinghead.tools.sanity $(if $(call bool,BLIND),--blind-landmarks) $(ARGS)

gpu-check:  ## on a lent GPU (<= 8 min): pytest -m gpu, paper model bf16 eager/compiled step + MFU, memory per batch, reenact fps, DDP step -> gpu_check.json [CPU=1 tiny smoke run] [OUT=] [ARGS=]
	$(PYTHON) -m talkinghead.tools.gpu_check $(if $(call bool,CPU),--cpu) --out $(or $(OUT),gpu_check.json) $(ARGS)

rehearse:  ## the paper config's optimisation at VoxCeleb2's W size on this CPU (~10 min idle): ‖ê‖, W, D, G over time + verdict [QUICK=1] [ROWS=1090000] [ARGS=overrides]
	$(PYTHON) -m talkinghead.tools.rehearse $(if $(call bool,QUICK),--quick) $(if $(ROWS),--rows $(ROWS)) $(ARGS)

.PHONY: meta-learn-slurm meta-learn-torchrun
meta-learn-slurm:  ## meta-learn as a SLURM job (submitit) that checkpoints + requeues itself at TIME's end and on preemption: NODES=1 GPUS=1 [PARTITION= TIME=1440 min] EXP= DATA= DATA_ROOT= ARGS= [LAUNCH='--cluster local --wait ...']
	$(PYTHON) -m talkinghead.training.launch --nodes $(or $(NODES),1) --gpus $(or $(GPUS),1) $(if $(PARTITION),--partition $(call q,$(PARTITION))) \
		$(if $(TIME),--time $(TIME)) $(LAUNCH) -- experiment=$(EXP) $(if $(DATA),data=$(DATA)) \
		$(if $(DATA_ROOT),$(call q,data.root=$(DATA_ROOT))) $(ARGS)

meta-learn-torchrun:  ## meta-learn with torchrun on GPUS=1 per node, a dead rank restarts all from last.ckpt (RESTARTS=3) [NODES=1 RDZV=host:port for several nodes] EXP= DATA_ROOT= ARGS=
	torchrun --nnodes=$(or $(NODES),1) --nproc-per-node=$(or $(GPUS),1) --max-restarts=$(or $(RESTARTS),3) \
		$(if $(RDZV),--rdzv-backend=c10d --rdzv-endpoint=$(RDZV),--standalone) -m talkinghead.cli meta-learn \
		experiment=$(EXP) $(if $(DATA),data=$(DATA)) $(if $(DATA_ROOT),$(call q,data.root=$(DATA_ROOT))) \
		trainer=ddp trainer.num_nodes=$(or $(NODES),1) trainer.devices=$(or $(GPUS),1) $(ARGS)
