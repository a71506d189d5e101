from msgrelay.cli import main

main()
