# Writes OUT: a C file with every schemas/lua/*.lua script (except
# common.lua, which is prepended to each; the script itself runs as a
# function, followed by common.lua's flush_counts()) as a string, indexed by the enum in
# broker/gr_lua.h. Run as: cmake -DDIR=<lua dir> -DOUT=<file.c> -P embed_lua.cmake
cmake_policy(SET CMP0054 NEW)
file(READ ${DIR}/common.lua common_text)
file(GLOB scripts ${DIR}/*.lua)
list(SORT scripts)
set(text "/* Generated from the scripts in schemas/lua by broker/embed_lua.cmake: do not edit. */\n#include \"gr_lua.h\"\n\nconst char *const gr_lua_src[GR_LUA_COUNT] = {\n")
foreach(f ${scripts})
  get_filename_component(name ${f} NAME_WE)
  if(name STREQUAL "common")
    continue()
  endif()
  string(TOUPPER ${name} upper)
  file(READ ${f} body)
  # the script runs as a function so that the counts it gathered are
  # applied however it returns (common.lua, flush_counts)
  set(body "${common_text}\n-- ---- ${name}.lua ----\nlocal function script_main()\n${body}\nend\nlocal script_result = script_main()\nflush_counts()\nreturn script_result\n")
  string(REPLACE "\\" "\\\\" body "${body}")
  string(REPLACE "\"" "\\\"" body "${body}")
  string(REPLACE "\n" "\\n\"\n    \"" body "${body}")
  string(APPEND text "  [GR_LUA_${upper}] =\n    \"${body}\",\n")
endforeach()
string(APPEND text "};\n")
file(WRITE ${OUT}.tmp "${text}")
file(RENAME ${OUT}.tmp ${OUT})
