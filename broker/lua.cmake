# Embeds the broker's Redis scripts (schemas/lua/*.lua) into libgraft as C
# strings, regenerated whenever a script changes. Included by the top-level
# CMakeLists.txt after the graft target exists.
file(GLOB GRAFT_LUA_FILES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/schemas/lua/*.lua)
set(GRAFT_LUA_C ${CMAKE_BINARY_DIR}/gr_lua_gen.c)
add_custom_command(
  OUTPUT ${GRAFT_LUA_C}
  COMMAND ${CMAKE_COMMAND} -DDIR=${CMAKE_SOURCE_DIR}/schemas/lua -DOUT=${GRAFT_LUA_C}
          -P ${CMAKE_SOURCE_DIR}/broker/embed_lua.cmake
  DEPENDS ${GRAFT_LUA_FILES} ${CMAKE_SOURCE_DIR}/broker/embed_lua.cmake
  COMMENT "Embedding broker Lua scripts")
target_sources(graft PRIVATE ${GRAFT_LUA_C})
