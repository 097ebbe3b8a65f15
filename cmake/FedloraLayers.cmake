# Layer enforcement over the CMake target graph.
#
# fedlora_forbid_dependency(<target> "<pattern;...>") walks the link closure of <target> (LINK_LIBRARIES and
# INTERFACE_LINK_LIBRARIES of every target reached, plus plain library paths) and stops configuration if any
# item matches one of the patterns (substring match on the target name or file name, case-sensitive).

function(_fedlora_link_closure item out_var)
  set(seen ${${out_var}})
  if(item IN_LIST seen)
    return()
  endif()
  list(APPEND seen "${item}")
  if(TARGET "${item}")
    get_target_property(aliased "${item}" ALIASED_TARGET)
    if(aliased)
      _fedlora_link_closure("${aliased}" seen)
    endif()
    get_target_property(type "${item}" TYPE)
    set(props INTERFACE_LINK_LIBRARIES)
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      list(APPEND props LINK_LIBRARIES)
    endif()
    foreach(prop IN LISTS props)
      get_target_property(deps "${item}" ${prop})
      if(deps)
        foreach(dep IN LISTS deps)
          string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" dep "${dep}")
          if(NOT dep MATCHES "^\\$<")
            _fedlora_link_closure("${dep}" seen)
          endif()
        endforeach()
      endif()
    endforeach()
  endif()
  set(${out_var} ${seen} PARENT_SCOPE)
endfunction()

function(fedlora_forbid_dependency target patterns)
  set(closure "")
  _fedlora_link_closure(${target} closure)
  list(REMOVE_ITEM closure ${target})
  foreach(dep IN LISTS closure)
    get_filename_component(dep_name "${dep}" NAME)
    foreach(pattern IN LISTS patterns)
      string(FIND "${dep_name}" "${pattern}" pos)
      if(NOT pos EQUAL -1)
        message(FATAL_ERROR
          "Layer rule broken: ${target} links '${dep}' (matches '${pattern}'). "
          "See DESIGN.md section 1: the radio side never links LibTorch; the trainer never links GNU Radio.")
      endif()
    endforeach()
  endforeach()
  message(STATUS "fedlora: layer check passed for ${target}")
endfunction()

# Common settings for the project's own targets.
function(fedlora_target_defaults target)
  target_link_libraries(${target} PRIVATE fedlora_warnings)
endfunction()
