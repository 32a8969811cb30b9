#include "clock.h"

_Thread_local struct clock_turn clock_turn;
