package hot

func runCrashChild() bool { return false }
