package errno

const useWSA = true
