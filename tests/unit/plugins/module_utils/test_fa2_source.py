"""Unit tests of module_utils/fa2_source.py: the arch-list model, the CMakeLists patch, the commit lookup.

The CMakeLists texts are the test project's own (tests/fixtures/fa2_test_project), which carries
flash-attention's lines verbatim, plus variants derived from it in each test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.plugins.module_utils import fa2_source as fs

ROOT = Path(__file__).resolve().parents[4]
FIXTURE = ROOT / "tests" / "fixtures" / "fa2_test_project"
STOCK = (FIXTURE / "CMakeLists.txt").read_text()
FA2_STOCK_LINE = 'cuda_archs_loose_intersection(FA2_ARCHS "8.0+PTX" "${CUDA_ARCHS}")'
APPEND_13 = 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "11.0" "12.0")'


def only_fa2_line_changed(text=STOCK):
    """The seed's first attempt: only the FA2 line edited."""
    return text.replace(FA2_STOCK_LINE, 'cuda_archs_loose_intersection(FA2_ARCHS "8.0;12.1" "${CUDA_ARCHS}")')


def both_changes(text=STOCK):
    """The seed's step 3 (and upstream PR #196 in effect): FA2 line and 12.1 supported for CUDA >= 13."""
    return only_fa2_line_changed(text).replace(APPEND_13, 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "11.0" "12.0" "12.1")')


# ---------------------------------------------------------------------------- the FACTS.md collapse table


@pytest.mark.parametrize("text, target, expected", [
    (STOCK, "12.1", ["8.0+PTX"]),
    (STOCK, "8.0;12.1", ["8.0+PTX"]),
    (only_fa2_line_changed(), "12.1", []),
    (only_fa2_line_changed(), "8.0;12.1", ["8.0"]),
    (both_changes(), "12.1", ["12.1"]),
    (both_changes(), "8.0;12.1", ["8.0", "12.1"]),
    (both_changes(), "12.1a", ["12.1"]),
], ids=["stock-12.1", "stock-8.0;12.1", "fa2-line-only-12.1-EMPTY", "fa2-line-only-8.0;12.1", "both-12.1",
        "both-8.0;12.1", "both-12.1a"])
def test_collapse_table_of_facts_section_3(text, target, expected):
    assert fs.simulate(text, target, "13.0")["fa2_archs"] == expected


def test_the_target_collapses_to_12_0_when_12_1_is_not_supported():
    assert fs.simulate(STOCK, "12.1", "13.0")["cuda_archs"] == ["12.0"]
    assert fs.simulate(both_changes(), "12.1", "13.0")["cuda_archs"] == ["12.1"]


@pytest.mark.parametrize("src, tgt, expected", [
    (["8.0+PTX"], ["12.0"], ["8.0+PTX"]),
    (["8.0"], ["12.0"], []),                       # SASS does not cross major versions
    (["8.0", "8.6", "9.0"], ["8.9"], ["8.6"]),     # highest same-major arch below the target
    (["9.0a"], ["9.0"], ["9.0a"]),                 # an 'a' arch needs its plain form as a target
    (["9.0a"], ["12.1"], []),
    (["8.0", "12.0"], ["12.1a"], ["12.0"]),        # a trailing 'a' on a target is ignored
    (["8.0+PTX"], ["8.0", "12.0"], ["8.0+PTX"]),   # duplicates dropped
    ([], ["12.1"], []),
])
def test_loose_intersection_model(src, tgt, expected):
    assert fs.loose_intersection(src, tgt) == expected


# ---------------------------------------------------------------------------- patching


def test_patch_stock_for_12_1_makes_both_changes():
    new, info = fs.patch_cmakelists(STOCK, ["12.1"], "13.0")
    assert info["status"] == "patched"
    assert info["before"] == ["8.0+PTX"] and info["after"] == ["12.1"] == info["desired"]
    assert 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "11.0" "12.0" "12.1")' in new
    assert 'cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")' in new
    assert len(info["changes"]) == 2
    # the CUDA 12.8 branch and everything else stay as they were
    assert 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "10.1" "12.0")' in new
    assert len(new.splitlines()) == len(STOCK.splitlines())
    changed = [a for a, b in zip(STOCK.splitlines(), new.splitlines()) if a != b]
    assert len(changed) == 2


def test_patch_is_idempotent():
    once, _info = fs.patch_cmakelists(STOCK, ["8.0", "12.1"], "13.0")
    twice, info = fs.patch_cmakelists(once, ["8.0", "12.1"], "13.0")
    assert twice == once
    assert info["status"] == "unchanged" and info["changes"] == []


def test_seed_two_arch_list_is_one_setting_away():
    new, info = fs.patch_cmakelists(STOCK, "8.0;12.1", "13.0")
    assert info["after"] == ["8.0", "12.1"]
    assert fs.simulate(new, "8.0;12.1", "13.0")["fa2_archs"] == ["8.0", "12.1"]


def test_source_that_already_has_both_changes_is_left_alone():
    text = both_changes()
    new, info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert new == text and info["status"] == "unchanged" and info["after"] == ["12.1"]


def test_pr196_style_source_with_its_own_wording_is_left_alone():
    """A source that reaches the same result another way (here: 12.0 and 12.1 in the FA2 list and
    12.1 in the supported list) must not be rewritten: the configured result already matches."""
    text = STOCK.replace(FA2_STOCK_LINE, 'cuda_archs_loose_intersection(FA2_ARCHS "8.0+PTX;12.0;12.1" "${CUDA_ARCHS}")')
    text = text.replace(APPEND_13, 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "11.0" "12.0" "12.1")')
    new, info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert new == text and info["status"] == "unchanged"
    # ...but asking for 8.0 too changes it, because 8.0 would come with PTX there
    new, info = fs.patch_cmakelists(text, ["8.0", "12.1"], "13.0")
    assert info["before"] == ["8.0+PTX", "12.1"] and info["after"] == ["8.0", "12.1"]


def test_only_fa2_line_changed_gets_the_missing_supported_arch():
    text = only_fa2_line_changed()
    new, info = fs.patch_cmakelists(text, ["8.0", "12.1"], "13.0")
    assert info["before"] == ["8.0"]
    assert info["changes"] == ["CUDA_SUPPORTED_ARCHS: added 12.1 (line %d, list(APPEND CUDA_SUPPORTED_ARCHS), in the branch "
                               "if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 13.0))"
                               % (STOCK.splitlines().index("    " + APPEND_13) + 1)]


def test_ptx_on_request_goes_on_the_highest_arch():
    new, info = fs.patch_cmakelists(STOCK, ["12.1", "8.0"], "13.0", ptx=True)
    assert info["desired"] == ["8.0", "12.1+PTX"] == info["after"]
    assert '"8.0;12.1+PTX"' in new


def test_without_a_version_block_the_set_line_gets_the_arch():
    text = STOCK.replace(STOCK[STOCK.index("if(${CMAKE_CUDA_COMPILER_VERSION}"):STOCK.index("endif()") + len("endif()")], "")
    new, info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert 'set(CUDA_SUPPORTED_ARCHS "8.0;8.6;8.9;9.0" "12.1")' in new
    assert info["after"] == ["12.1"]


def test_crlf_line_endings_survive():
    text = STOCK.replace("\n", "\r\n")
    new, _info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert new.count("\r\n") == text.count("\r\n")


@pytest.mark.parametrize("edit, missing", [
    (lambda t: t.replace(FA2_STOCK_LINE, "# FA2 line removed"), "cuda_archs_loose_intersection(FA2_ARCHS"),
    (lambda t: t.replace('set(CUDA_SUPPORTED_ARCHS "8.0;8.6;8.9;9.0")', "# gone"), "set(CUDA_SUPPORTED_ARCHS"),
    (lambda t: "project(unrelated)\n", "set(CUDA_SUPPORTED_ARCHS"),
])
def test_missing_lines_fail_with_a_clear_message(edit, missing):
    with pytest.raises(fs.Fa2SourceError) as err:
        fs.patch_cmakelists(edit(STOCK), ["12.1"], "13.0")
    assert "expected line(s) not found in CMakeLists.txt" in str(err.value)
    assert missing in str(err.value)


def test_taken_branch_without_append_line_gets_the_arch_on_the_set_line():
    """The branch CMake takes has no list(APPEND): the set() before it runs for every version, so it gets the
    arch; the other branch (CUDA 12.8) is left as it is."""
    text = STOCK.replace("    " + APPEND_13 + "\n", "    message(STATUS \"no append here\")\n")
    new, info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert 'set(CUDA_SUPPORTED_ARCHS "8.0;8.6;8.9;9.0" "12.1")' in new
    assert 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "10.1" "12.0")' in new
    assert info["after"] == ["12.1"]


@pytest.mark.parametrize("bad", ["sm_121", "121", "12", "twelve", "12.1b", ""])
def test_bad_arch_values_are_named(bad):
    with pytest.raises(fs.Fa2SourceError) as err:
        fs.normalize_archs([bad] if bad else [])
    assert (repr(bad) in str(err.value)) or "empty" in str(err.value)


def test_unified_diff_names_the_file():
    new, _info = fs.patch_cmakelists(STOCK, ["12.1"], "13.0")
    diff = fs.unified_diff(STOCK, new, "/src/CMakeLists.txt")
    assert diff.startswith("--- /src/CMakeLists.txt\n+++ /src/CMakeLists.txt\n")
    assert '-    cuda_archs_loose_intersection(FA2_ARCHS "8.0+PTX" "${CUDA_ARCHS}")' in diff
    assert '+    cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")' in diff


# ---------------------------------------------------------------------------- commits and keys


@pytest.mark.parametrize("version, commit", [
    ("0.33.0", "b273a02621d3c94bc747df67204f591b67f38fae"),
    ("0.33.0+cu130", "b273a02621d3c94bc747df67204f591b67f38fae"),
    ("0.32.0", "9cd61de38763d712bb6ce56e2a02cc2bf718c89f"),
    ("0.24.0", "803020a8fa15407871341d41eba4919ade2ee1ee"),
    ("0.25.0", "2c839c33742309ec41e620bf837495ec9926c56e"),
    ("0.25.1", "2c839c33742309ec41e620bf837495ec9926c56e"),
    ("0.27.0", "28e862d21806bc3580207aa0ad4e2759151e9827"),
    ("0.27.1", "28e862d21806bc3580207aa0ad4e2759151e9827"),
    ("0.33.1", None),            # not released when the table was checked: the caller must ask for fa2_native_commit
    ("0.32.1", None),            # a patch release may move the pin, so its series does not answer for it
    ("0.23.0", None),
])
def test_release_table(version, commit):
    assert fs.commit_for_release(version) == commit


def test_extra_table_entries_win():
    assert fs.commit_for_release("0.33.1", {"0.33.1": "abc1234"}) == "abc1234"
    assert fs.commit_for_release("0.34.2", {"0.34": "abc1234"}) == "abc1234"      # a series key of the user's
    assert fs.commit_for_release("0.33.0", {"0.33": "ffff000"}) == "b273a02621d3c94bc747df67204f591b67f38fae"


@pytest.mark.parametrize("version, sha, final", [
    ("0.33.0", None, True),
    ("0.33.0+cu130", None, True),
    ("0.33.1.dev12+g1a2b3c4d5.cu130", "1a2b3c4d5", False),
    ("0.34.0rc1.dev40+gdeadbeef", "deadbeef", False),
    ("0.34.0rc1", None, False),
])
def test_nightly_versions_carry_the_vllm_commit(version, sha, final):
    info = fs.parse_vllm_version(version)
    assert info["nightly_commit"] == sha
    assert info["is_final"] is final


@pytest.mark.parametrize("bad", [None, "", "latest"])
def test_unusable_vllm_versions(bad):
    with pytest.raises(fs.Fa2SourceError):
        fs.parse_vllm_version(bad)


VLLM_CMAKE = """
if(VLLM_FLASH_ATTN_SRC_DIR)
  FetchContent_Declare(
          vllm-flash-attn SOURCE_DIR
          ${VLLM_FLASH_ATTN_SRC_DIR}
          BINARY_DIR ${CMAKE_BINARY_DIR}/vllm-flash-attn
  )
else()
  FetchContent_Declare(
          vllm-flash-attn
          GIT_REPOSITORY https://github.com/vllm-project/flash-attention.git
          GIT_TAG 6f27a0544e027b53fc93d8d24f65cc2b75eedc78 \n          GIT_PROGRESS TRUE
  )
endif()
"""


def test_git_tag_from_vllms_cmake_file():
    assert fs.parse_git_tag(VLLM_CMAKE) == {
        "commit": "6f27a0544e027b53fc93d8d24f65cc2b75eedc78",
        "repository": "https://github.com/vllm-project/flash-attention.git"}
    with pytest.raises(fs.Fa2SourceError, match="no GIT_TAG"):
        fs.parse_git_tag("<html>404</html>")


def test_build_key_is_stable_and_sensitive():
    fields = {"cpu_arch": "aarch64", "target_archs": ["12.1"], "vllm": "0.33.0", "torch": "2.14.0",
              "cuda": "13.0", "fa_commit": "b273a026"}
    assert fs.build_key(fields) == fs.build_key(dict(reversed(list(fields.items()))))
    assert len(fs.build_key(fields)) == 16
    for name, value in [("cpu_arch", "x86_64"), ("target_archs", ["8.0", "12.1"]), ("vllm", "0.33.1"),
                        ("torch", "2.14.1"), ("cuda", "13.1"), ("fa_commit", "other")]:
        assert fs.build_key(dict(fields, **{name: value})) != fs.build_key(fields), name


def test_tree_fingerprint_ignores_build_dirs_and_follows_patched_text(tmp_path):
    tree = tmp_path / "src"
    (tree / "csrc").mkdir(parents=True)
    (tree / "CMakeLists.txt").write_text(STOCK)
    (tree / "csrc" / "a.cu").write_text("kernel")
    patched, _info = fs.patch_cmakelists(STOCK, ["12.1"], "13.0")
    first = fs.tree_fingerprint(str(tree), patched)
    (tree / "build").mkdir()
    (tree / "build" / "junk.o").write_text("object")
    (tree / "CMakeLists.txt").write_text(patched)
    assert fs.tree_fingerprint(str(tree), patched) == first
    (tree / "csrc" / "a.cu").write_text("kernel v2")
    assert fs.tree_fingerprint(str(tree), patched) != first


# ----------------------------------------------------------------------------------------------
# the libcuda the build links against (CMake's CUDA::cuda_driver)

# ldconfig -p indents each entry with a tab.
LDCONFIG_WITH_DRIVER = (
    "1234 libs found in cache `/etc/ld.so.cache'\n"
    "\tlibcudart.so.13 (libc6,x86-64) => /usr/local/cuda-13.0/lib/libcudart.so.13\n"
    "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n"
)


def _files(*paths):
    present = set(paths)
    return lambda path: path in present


def _no_targets(_path):
    raise OSError("no targets dir")


def test_no_driver_and_no_stub_is_reported_with_every_place_looked_at():
    found = fs.find_cuda_driver_library("/usr/local/cuda", "", "x86_64", isfile=_files(), listdir=lambda _p: ["x86_64-linux"])
    assert found["path"] is None and found["kind"] is None and not found["exists"]
    assert found["searched"][:3] == ["/usr/local/cuda/lib64/libcuda.so", "/usr/local/cuda/lib/libcuda.so",
                                     "/usr/local/cuda/targets/x86_64-linux/lib/libcuda.so"]
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so.1" in found["searched"]
    assert found["searched"][-3:] == ["/usr/local/cuda/lib64/stubs/libcuda.so", "/usr/local/cuda/lib/stubs/libcuda.so",
                                      "/usr/local/cuda/targets/x86_64-linux/lib/stubs/libcuda.so"]


def test_the_driver_wins_over_the_toolkit_stub():
    stub = "/usr/local/cuda/lib64/stubs/libcuda.so"
    found = fs.find_cuda_driver_library("/usr/local/cuda", LDCONFIG_WITH_DRIVER, "x86_64",
                                        isfile=_files(stub, "/usr/lib/x86_64-linux-gnu/libcuda.so.1"), listdir=_no_targets)
    assert (found["kind"], found["path"]) == ("driver", "/usr/lib/x86_64-linux-gnu/libcuda.so.1")


def test_the_driver_dev_link_wins_over_its_soname_file():
    found = fs.find_cuda_driver_library("/usr/local/cuda", "", "aarch64", listdir=_no_targets,
                                        isfile=_files("/usr/lib/aarch64-linux-gnu/libcuda.so", "/usr/lib/aarch64-linux-gnu/libcuda.so.1"))
    assert (found["kind"], found["path"]) == ("driver", "/usr/lib/aarch64-linux-gnu/libcuda.so")


def test_the_toolkit_stub_when_there_is_no_driver():
    stub = "/opt/cuda/targets/sbsa-linux/lib/stubs/libcuda.so"
    found = fs.find_cuda_driver_library("/opt/cuda/", "", "aarch64", isfile=_files(stub), listdir=lambda _p: ["sbsa-linux"])
    assert (found["kind"], found["path"], found["exists"]) == ("stub", stub, True)


def test_a_given_library_is_returned_even_when_missing_so_that_the_role_can_name_it():
    found = fs.find_cuda_driver_library("/usr/local/cuda", LDCONFIG_WITH_DRIVER, isfile=_files(), listdir=_no_targets,
                                        given="/srv/stubs/libcuda.so")
    assert found == {"path": "/srv/stubs/libcuda.so", "kind": "given", "exists": False, "searched": ["/srv/stubs/libcuda.so"]}


def test_ldconfig_lines_are_read_by_library_name():
    assert fs._ldconfig_paths(LDCONFIG_WITH_DRIVER, ["libcuda.so.1"]) == ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]
    assert fs._ldconfig_paths(LDCONFIG_WITH_DRIVER, ["libcuda.so"]) == []


# ----------------------------------------------------------------------------------------------
# CMakeLists.txt layouts the patch reads as CMake does (issue 12, point 9)

SUPPORTED_BLOCK = STOCK[STOCK.index('set(CUDA_SUPPORTED_ARCHS "8.0;8.6;8.9;9.0")'):STOCK.index("endif()") + len("endif()")]


def with_fa2_call(call, text=STOCK):
    return text.replace(FA2_STOCK_LINE, call)


def changed_lines(old, new):
    return [(a, b) for a, b in zip(old.splitlines(), new.splitlines()) if a != b]


def test_fa2_call_across_lines_with_comments():
    call = ('cuda_archs_loose_intersection(FA2_ARCHS   # the FA2 list\n'
            '        #[[ a bracket comment ]] "8.0+PTX"\n'
            '        "${CUDA_ARCHS}")  # the targets')
    text = with_fa2_call(call)
    assert fs.simulate(text, "12.1", "13.0")["fa2_archs"] == ["8.0+PTX"]
    new, info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert info["after"] == ["12.1"]
    assert '        #[[ a bracket comment ]] "12.1"\n        "${CUDA_ARCHS}")  # the targets' in new
    assert len(changed_lines(text, new)) == 2                      # the list argument and the supported list


def test_pr196_two_line_call_is_left_alone():
    call = 'cuda_archs_loose_intersection(FA2_ARCHS\n            "8.0+PTX;12.0;12.1" "${CUDA_ARCHS}")'
    text = with_fa2_call(call).replace(APPEND_13, 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "11.0" "12.0" "12.1")')
    new, info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert new == text and info["status"] == "unchanged"


def test_commented_out_calls_are_not_read():
    call = ('# cuda_archs_loose_intersection(FA2_ARCHS "8.0;12.1" "${CUDA_ARCHS}")\n'
            '    #[[\n    cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")\n    ]]\n    ' + FA2_STOCK_LINE)
    text = with_fa2_call(call)
    assert fs.simulate(text, "12.1", "13.0")["fa2_archs"] == ["8.0+PTX"]
    new, _info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert '# cuda_archs_loose_intersection(FA2_ARCHS "8.0;12.1" "${CUDA_ARCHS}")' in new
    assert '    cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")\n    ]]' in new
    assert '\n    cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")\n    message(STATUS "FA2_ARCHS' in new


REVERSED = '''set(CUDA_SUPPORTED_ARCHS "8.0;8.6;8.9;9.0")
if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_LESS 12.8)
    # nothing newer before CUDA 12.8
elseif(CMAKE_CUDA_COMPILER_VERSION VERSION_LESS 13.0)
    list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "10.1" "12.0")
else()
    list(APPEND CUDA_SUPPORTED_ARCHS
         "10.0" "11.0"   # Thor is 11.0 from CUDA 13
         "12.0")
endif()'''


@pytest.mark.parametrize("cuda, edited, untouched", [
    ("13.0", '         "12.0" "12.1")', 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "10.1" "12.0")'),
    ("12.9", 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "10.1" "12.0" "12.1")', '         "12.0")'),
])
def test_reversed_version_block_gets_the_arch_in_the_branch_taken_only(cuda, edited, untouched):
    text = STOCK.replace(SUPPORTED_BLOCK, REVERSED)
    assert fs.simulate(text, "12.1", cuda)["cuda_archs"] == ["12.0"]
    new, info = fs.patch_cmakelists(text, ["12.1"], cuda)
    assert info["after"] == ["12.1"]
    assert edited in new and untouched in new
    assert len(changed_lines(text, new)) == 2
    assert "(line " in info["changes"][0] and "in the branch " in info["changes"][0]


def test_old_cuda_takes_the_first_reversed_branch_where_the_set_line_is_edited():
    text = STOCK.replace(SUPPORTED_BLOCK, REVERSED)
    new, info = fs.patch_cmakelists(text, ["9.0"], "12.4")          # 9.0 is supported: only the FA2 list changes
    assert changed_lines(text, new) == [(FA2_STOCK_LINE.join(["    ", ""]), '    cuda_archs_loose_intersection(FA2_ARCHS "9.0" "${CUDA_ARCHS}")')]
    new, info = fs.patch_cmakelists(text, ["12.0"], "12.4")
    assert 'set(CUDA_SUPPORTED_ARCHS "8.0;8.6;8.9;9.0" "12.0")' in new
    assert REVERSED.split("\n", 1)[1] in new                       # neither later branch was touched


def test_version_condition_forms():
    def cond(text):
        commands, _chains = fs.read_cmake("if(%s)\nendif()\n" % text)
        return commands[0].args
    assert fs.version_condition(cond("${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 13.0"), "13.0") is True
    assert fs.version_condition(cond("13.0 VERSION_LESS_EQUAL CMAKE_CUDA_COMPILER_VERSION"), "12.8") is False
    assert fs.version_condition(cond("NOT ${CMAKE_CUDA_COMPILER_VERSION} VERSION_LESS 12.8"), "13.0.88") is True
    assert fs.version_condition(cond('"${CMAKE_CUDA_COMPILER_VERSION}" VERSION_EQUAL "13.0"'), "13.0") is True
    assert fs.version_condition(cond("FA2_ENABLED"), "13.0") is None
    assert fs.version_condition(cond('VLLM_GPU_LANG STREQUAL "CUDA"'), "13.0") is None


def test_fa2_call_in_version_branches_only_the_one_taken_is_patched():
    call = ('if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 13.0)\n'
            '        cuda_archs_loose_intersection(FA2_ARCHS "8.0+PTX;12.0" "${CUDA_ARCHS}")\n'
            '    else()\n'
            '        ' + FA2_STOCK_LINE + '\n'
            '    endif()')
    text = with_fa2_call(call)
    new, info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert info["before"] == ["12.0"] and info["after"] == ["12.1"]
    assert 'cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")\n    else()\n        ' + FA2_STOCK_LINE in new


def test_unquoted_fa2_list_is_read_and_written_quoted():
    text = with_fa2_call('cuda_archs_loose_intersection(FA2_ARCHS 8.0+PTX ${CUDA_ARCHS})')
    new, _info = fs.patch_cmakelists(text, ["12.1"], "13.0")
    assert 'cuda_archs_loose_intersection(FA2_ARCHS "12.1" ${CUDA_ARCHS})' in new


@pytest.mark.parametrize("call, message", [
    ('cuda_archs_loose_intersection(FA2_ARCHS 8.0;12.1 "${CUDA_ARCHS}")', "has 4 arguments after CMake's list expansion"),
    ('cuda_archs_loose_intersection(FA2_ARCHS "${MY_FA2_LIST}" "${CUDA_ARCHS}")', "the FA2 arch list is a variable"),
    ('cuda_archs_loose_intersection(FA2_ARCHS "8.0+PTX" "${CUDA_ARCHS}"', "not closed"),
])
def test_layouts_the_patch_cannot_model_fail_with_the_line(call, message):
    with pytest.raises(fs.Fa2SourceError, match=message.replace("(", "\\(")):
        fs.patch_cmakelists(with_fa2_call(call), ["12.1"], "13.0")


def test_a_call_inside_a_function_body_is_not_what_runs():
    text = STOCK.replace(FA2_STOCK_LINE, 'function(unused)\n  cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")\n'
                                         'endfunction()\n    ' + FA2_STOCK_LINE)
    assert fs.simulate(text, "12.1", "13.0")["fa2_archs"] == ["8.0+PTX"]


def test_an_fa2_call_only_in_a_branch_not_taken_is_an_error():
    call = 'if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_LESS 12.0)\n  ' + FA2_STOCK_LINE + '\nendif()'
    with pytest.raises(fs.Fa2SourceError, match="runs for CUDA 13.0"):
        fs.patch_cmakelists(with_fa2_call(call), ["12.1"], "13.0")
