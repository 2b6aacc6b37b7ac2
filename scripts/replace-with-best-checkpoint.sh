#!/usr/bin/env bash
# Replace STAGE_DIR/models/RUN.ckpt with the best Lightning checkpoint of that run.
#
# See usage() below, or run with --help.
set -euo pipefail
export LC_ALL=C

prog=$(basename -- "$0")

usage() {
    cat <<EOF
usage: $prog STAGE_DIR [RUN] [--dry-run] [--version N]

Replace STAGE_DIR/models/RUN.ckpt with a copy of the best checkpoint found in
STAGE_DIR/models/tb_logs/RUN/version_*/checkpoints/.

Candidates are files named  epoch=<E>-step=<S>-<metric>=<value>.ckpt
(last.ckpt and other files are ignored; a run whose method monitors no
metric saves only last.ckpt and has nothing to choose). Lower is better when the metric name
contains "loss", higher otherwise; ties go to the later checkpoint (higher
version, then higher step). All candidates of a run must use the same metric.

arguments:
  STAGE_DIR      stage folder holding models/ (e.g. pretrain/simclr)
  RUN            run name (folder under STAGE_DIR/models/tb_logs/);
                 if omitted, every run folder there is processed

options:
  --dry-run      print what would be replaced, change nothing
  --version N    only consider version_N of the run(s)
  -h, --help     show this help and exit

Options may appear in any position. Errors exit with status 1 (usage errors 2)
and leave every file unchanged.
EOF
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

usage_error() {
    printf 'error: %s\n' "$*" >&2
    usage >&2
    exit 2
}

# ---------------------------------------------------------------- arguments
dry_run=0
version=""
positional=()
while (($#)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --dry-run)
            dry_run=1
            ;;
        --version)
            (($# >= 2)) || usage_error "--version needs a value"
            version=$2
            shift
            ;;
        --version=*)
            version=${1#--version=}
            ;;
        --)
            shift
            positional+=("$@")
            break
            ;;
        -?*)
            die "unknown option: $1 (see --help)"
            ;;
        *)
            positional+=("$1")
            ;;
    esac
    shift
done

((${#positional[@]} >= 1)) || usage_error "missing STAGE_DIR"
((${#positional[@]} <= 2)) || usage_error "too many arguments: ${positional[*]:2}"

stage_dir=${positional[0]}
run_arg=${positional[1]-}

[[ -n $stage_dir ]] || usage_error "STAGE_DIR is empty"
# Strip trailing slashes (but keep "/" itself).
while [[ $stage_dir == */ && $stage_dir != / ]]; do stage_dir=${stage_dir%/}; done

if [[ -n $version ]]; then
    [[ $version =~ ^[0-9]+$ ]] || die "--version expects a non-negative integer, got '$version'"
    version=$((10#$version))
fi

if ((${#positional[@]} == 2)); then
    [[ -n $run_arg && $run_arg != . && $run_arg != .. && $run_arg != */* ]] ||
        die "invalid RUN name: '$run_arg'"
fi

models_dir="$stage_dir/models"
tb_dir="$models_dir/tb_logs"
[[ -d $tb_dir ]] || die "no tb_logs folder: $tb_dir does not exist"

# ---------------------------------------------------------------- selection
# epoch=<E>-step=<S>-<metric>=<value>[-v<K>].ckpt
ckpt_re='^epoch=([0-9]+)-step=([0-9]+)-([^=/-]+)=([-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?)(-v[0-9]+)?\.ckpt$'

# Sets best_path, best_metric, best_value for run $1, or dies.
select_best() {
    local run=$1 run_dir="$tb_dir/$1"
    local vdir vname vnum f base lines="" metrics="" n_metrics
    local -a vdirs=()

    [[ -d $run_dir ]] || die "run '$run' has no folder: $run_dir does not exist"

    if [[ -n $version ]]; then
        [[ -d $run_dir/version_$version ]] ||
            die "run '$run' has no version_$version folder in $run_dir"
        vdirs=("$run_dir/version_$version")
    else
        for vdir in "$run_dir"/version_*; do
            [[ -d $vdir ]] || continue
            vdirs+=("$vdir")
        done
    fi

    for vdir in "${vdirs[@]}"; do
        vname=${vdir##*/}
        [[ $vname =~ ^version_([0-9]+)$ ]] || continue
        vnum=$((10#${BASH_REMATCH[1]}))
        [[ -d $vdir/checkpoints ]] || continue
        for f in "$vdir"/checkpoints/*.ckpt; do
            [[ -f $f ]] || continue
            base=${f##*/}
            [[ $base =~ $ckpt_re ]] || continue
            # value  version  step  epoch  metric  path
            lines+="${BASH_REMATCH[4]}"$'\t'"$vnum"$'\t'"$((10#${BASH_REMATCH[2]}))"$'\t'"$((10#${BASH_REMATCH[1]}))"$'\t'"${BASH_REMATCH[3]}"$'\t'"$f"$'\n'
        done
    done

    if [[ -z $lines ]]; then
        local others=0 lasts=0
        for vdir in "${vdirs[@]}"; do
            for f in "$vdir"/checkpoints/*.ckpt; do
                [[ -f $f ]] || continue
                if [[ ${f##*/} == last.ckpt ]]; then lasts=$((lasts + 1)); else others=$((others + 1)); fi
            done
        done
        if ((lasts && !others)); then
            die "run '$run' saved only last.ckpt: its method selects no best checkpoint by a metric, so $models_dir/$run.ckpt is its last epoch already"
        fi
        if [[ -n $version ]]; then
            die "run '$run': no checkpoint matching 'epoch=<E>-step=<S>-<metric>=<value>.ckpt' in $run_dir/version_$version/checkpoints"
        fi
        die "run '$run': no checkpoint matching 'epoch=<E>-step=<S>-<metric>=<value>.ckpt' in $run_dir/version_*/checkpoints"
    fi

    metrics=$(printf '%s' "$lines" | cut -f5 | sort -u)
    n_metrics=$(printf '%s\n' "$metrics" | wc -l)
    if ((n_metrics != 1)); then
        die "run '$run': checkpoints use different metrics ($(printf '%s\n' "$metrics" | paste -sd, -)); cannot compare them"
    fi
    best_metric=$metrics

    local value_order=-k1,1gr # higher is better
    if [[ ${best_metric,,} == *loss* ]]; then
        value_order=-k1,1g # lower is better
    fi

    local best_line
    best_line=$(printf '%s' "$lines" |
        sort -t $'\t' "$value_order" -k2,2nr -k3,3nr -k4,4nr -k6,6r |
        head -n 1)
    best_value=$(printf '%s\n' "$best_line" | cut -f1)
    best_path=$(printf '%s\n' "$best_line" | cut -f6-)
}

runs=()
if [[ -n $run_arg ]]; then
    runs=("$run_arg")
else
    for d in "$tb_dir"/*; do
        [[ -d $d ]] || continue
        runs+=("${d##*/}")
    done
    ((${#runs[@]})) || die "no run folders in $tb_dir"
fi

# Resolve every run first so that an error changes nothing.
chosen_paths=()
chosen_descs=()
for run in "${runs[@]}"; do
    select_best "$run"
    chosen_paths+=("$best_path")
    chosen_descs+=("$best_metric=$best_value")
done

# ---------------------------------------------------------------- replace
tmp_file=""
cleanup() {
    if [[ -n $tmp_file && -e $tmp_file ]]; then rm -f -- "$tmp_file"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

file_mode=$(printf '%o' $((0666 & ~$(umask))))

for i in "${!runs[@]}"; do
    run=${runs[$i]}
    src=${chosen_paths[$i]}
    dest="$models_dir/$run.ckpt"
    line="$run: $src (${chosen_descs[$i]}) -> $dest"
    if ((dry_run)); then
        printf 'would replace: %s\n' "$line"
        continue
    fi
    [[ ! -d $dest ]] || die "$dest is a directory"
    tmp_file=$(mktemp "$models_dir/.$run.ckpt.tmp.XXXXXX")
    cp -- "$src" "$tmp_file"
    chmod "$file_mode" "$tmp_file"
    mv -f -- "$tmp_file" "$dest"
    tmp_file=""
    printf '%s\n' "$line"
done
